import Foundation
import NN
import Sparsity

/// When RiGL rewires and prune-and-rewire prunes, over a run of `totalSteps` steps.
///
/// Update steps are the multiples of `updateEvery`. Rewiring happens at update steps before
/// `T_end = ⌊end·T⌋` (and before the last step), with drop fraction `α_t = α/2·(1 + cos(π t / T_end))`.
/// Pruning (when `finalDensity < startDensity`) happens at the first `n = ⌊pruneEnd·T / ΔT⌋`
/// update steps, the k-th to density `d_f + (d_i − d_f)(1 − k/n)³` — exactly `d_f` at k = n.
struct RigLSchedule: Sendable, Equatable {
    var updateEvery: Int
    var alpha: Double
    var end: Double
    var totalSteps: Int
    var startDensity: Double
    var finalDensity: Double
    var pruneEnd: Double

    var prunes: Bool { finalDensity < startDensity }
    /// `T_end`: the mask is rewired only after steps before it.
    var rewireEnd: Int { min(Int((end * Double(totalSteps)).rounded(.down)), totalSteps) }
    /// Number of pruning updates, n.
    var pruneUpdates: Int { prunes ? Int((pruneEnd * Double(totalSteps)).rounded(.down)) / updateEvery : 0 }

    func rewires(afterStep t: Int) -> Bool { t % updateEvery == 0 && t >= 1 && t < rewireEnd }

    /// k (1…n) when step t ends with the k-th prune.
    func pruneIndex(afterStep t: Int) -> Int? {
        guard t % updateEvery == 0, t >= 1 else { return nil }
        let k = t / updateEvery
        return k <= pruneUpdates ? k : nil
    }

    func dropFraction(afterStep t: Int) -> Double {
        alpha / 2 * (1 + cos(Double.pi * Double(t) / Double(max(1, rewireEnd))))
    }

    /// Density after the k-th prune.
    func pruneDensity(_ k: Int) -> Double {
        k >= pruneUpdates ? finalDensity : finalDensity + (startDensity - finalDensity) * pow(1 - Double(k) / Double(pruneUpdates), 3)
    }

    /// A schedule that leaves no update is an error naming the keys to change.
    func validate() throws {
        if prunes {
            guard pruneUpdates >= 1 else {
                throw ConfigError("prune_end \(pruneEnd) leaves no pruning step: \(Int(pruneEnd * Double(totalSteps))) steps "
                    + "before it, rigl_update_every is \(updateEvery) (lower it or train longer)")
            }
        } else {
            guard rewireEnd > updateEvery else {
                throw ConfigError("rigl_update_every \(updateEvery) leaves no mask update: rigl_end \(end) of \(totalSteps) steps "
                    + "is step \(rewireEnd) (lower rigl_update_every, raise rigl_end or train longer)")
            }
        }
    }
}

/// RiGL / dynamic sparse training, and prune-and-rewire when the final density is lower
/// (see `AlgorithmSettings`). Per-layer densities stay fixed while only rewiring.
final class RigLPolicy: MaskPolicy {
    let schedule: RigLSchedule
    let epochs: Int

    init(schedule: RigLSchedule, epochs: Int) {
        self.schedule = schedule
        self.epochs = epochs
    }

    func phase(containing epoch: Int) -> SchedulePhase { SchedulePhase(start: 0, length: epochs, name: "training") }

    func changesMask(afterStep t: Int) -> Bool {
        schedule.rewires(afterStep: t) || schedule.pruneIndex(afterStep: t) != nil
    }

    func needsDenseGradient(atStep t: Int) -> Bool { schedule.rewires(afterStep: t) }

    func propose(afterStep t: Int, masks: MaskState, proposal: UnsafeMutableBufferPointer<Float>) -> String {
        let store = masks.store
        var label: [String] = []
        if let k = schedule.pruneIndex(afterStep: t) {
            let keep = Int((schedule.pruneDensity(k) * Double(masks.maskableTotal)).rounded())
            magnitudePrune(masks.layers, values: UnsafeBufferPointer(store.values), mask: proposal, density: .globalCount(keep))
            label.append("prune \(k)/\(schedule.pruneUpdates)")
        }
        if schedule.rewires(afterStep: t) {
            let alpha = schedule.dropFraction(afterStep: t)
            for layer in masks.layers {
                rewire(layer, values: UnsafeBufferPointer(store.values), gradients: UnsafeBufferPointer(store.gradients),
                       mask: proposal, dropFraction: alpha)
            }
            label.append(String(format: "rewire α=%.3f", alpha))
        }
        return label.joined(separator: " + ")
    }
}
