import NN
import Sparsity

/// A stretch of epochs over which the LR schedule runs once (IMP restarts it every cycle).
public struct SchedulePhase: Sendable, Equatable {
    /// First epoch of the phase (0-based) and its length in epochs.
    public var start: Int
    public var length: Int
    /// What the phase is, for progress output and metrics ("imp cycle 2/4").
    public var name: String
}

/// What an algorithm does to the mask during training (one implementation per algorithm).
///
/// Every rank holds the same policy and asks it the same questions at the same steps, so every
/// rank knows when a change comes; only rank 0 proposes the new mask, and the trainer's mask-change
/// path broadcasts and applies it. Steps are counted globally from the start of the run:
/// `t` = steps completed, the first step is `t = 1`.
protocol MaskPolicy: AnyObject {
    /// The LR phase that holds `epoch` (0-based).
    func phase(containing epoch: Int) -> SchedulePhase
    /// True (on every rank) when the mask changes after step `t`.
    func changesMask(afterStep t: Int) -> Bool
    /// True when step `t` needs the dense gradient of masked layers (reduced in full that step).
    func needsDenseGradient(atStep t: Int) -> Bool
    /// Rank 0: writes the next mask into `proposal` (which holds a copy of the current mask) and
    /// returns a short label of the change ("rigl", "prune+rewire", "imp cycle 1/4").
    func propose(afterStep t: Int, masks: MaskState, proposal: UnsafeMutableBufferPointer<Float>) -> String
    /// Every rank, before the first step of `epoch` (0-based), and when a checkpoint is loaded
    /// (with the last epoch it trained).
    func prepare(epoch: Int, store: ParameterStore)
    /// Every rank, once the initial mask and weights are in place (not on resume).
    func begin(masks: MaskState)
    /// Every rank, after the optimizer step `t` (before any mask change after it).
    func didStep(_ t: Int, masks: MaskState)
    /// Every rank, after a change proposed after step `t` was applied.
    func didChangeMask(afterStep t: Int, masks: MaskState)
    /// State a resumed run needs, as checkpoint tensors.
    func stateTensors(masks: MaskState) -> [(name: String, shape: [Int], values: [Float])]
    /// Takes the state back from a checkpoint's tensors (by name).
    func restoreState(_ tensor: (String) -> [Float]?, masks: MaskState) throws
}

extension MaskPolicy {
    func prepare(epoch: Int, store: ParameterStore) {}
    func begin(masks: MaskState) {}
    func didStep(_ t: Int, masks: MaskState) {}
    func didChangeMask(afterStep t: Int, masks: MaskState) {}
    func stateTensors(masks: MaskState) -> [(name: String, shape: [Int], values: [Float])] { [] }
    func restoreState(_ tensor: (String) -> [Float]?, masks: MaskState) throws {}
}

/// The initial mask for the whole run.
final class FixedMaskPolicy: MaskPolicy {
    let epochs: Int
    init(epochs: Int) { self.epochs = epochs }
    func phase(containing epoch: Int) -> SchedulePhase { SchedulePhase(start: 0, length: epochs, name: "training") }
    func changesMask(afterStep t: Int) -> Bool { false }
    func needsDenseGradient(atStep t: Int) -> Bool { false }
    func propose(afterStep t: Int, masks: MaskState, proposal: UnsafeMutableBufferPointer<Float>) -> String {
        preconditionFailure("a fixed mask never changes")
    }
}

/// The policy the config asks for, for a run of `stepsPerEpoch` steps per epoch on `network`
/// (built with the weight transform the algorithm needs).
func makeMaskPolicy(_ config: TrainConfig, stepsPerEpoch: Int, network: Network) throws -> MaskPolicy {
    switch config.algorithm {
    case "str":
        return STRPolicy(epochs: config.totalEpochs, stepsPerEpoch: stepsPerEpoch,
                         threshold: network.store.transform as! SoftThreshold)
    case "edge-popup":
        let layers = MaskableLayer.all(in: network.store)
        let final = 1 - (config.finalSparsity ?? config.sparsity)
        let densities: [Double]
        do {
            densities = try layerwiseDensities(layers, density: final, method: DensityMethod(rawValue: config.densityMethod)!,
                                               options: DensityOptions(keepFirstDense: config.denseFirst, keepLastDense: config.denseLast))
        } catch let e as SparsityError {
            throw ConfigError("edge-popup's final layer densities: \(e.description)")
        }
        return EdgePopupPolicy(levels: config.popupLevels, levelEpochs: config.popupLevelEpochs, stepsPerEpoch: stepsPerEpoch,
                               scores: network.store.transform as! EdgePopupScores,
                               targets: nonZeroCounts(layers, densities: densities, density: final))
    case "imp":
        return IMPPolicy(plan: config.impPlan, cycleEpochs: config.cycleEpochs, finalEpochs: config.finalEpochs,
                         rewindEpoch: config.impRewindEpoch ?? 0, stepsPerEpoch: stepsPerEpoch)
    case "rigl":
        let schedule = RigLSchedule(
            updateEvery: config.riglUpdateEvery ?? AlgorithmSettings.defaultUpdateEvery,
            alpha: config.riglAlpha ?? AlgorithmSettings.defaultAlpha,
            end: config.riglEnd ?? AlgorithmSettings.defaultRigLEnd,
            totalSteps: config.totalEpochs * stepsPerEpoch,
            startDensity: 1 - config.sparsity, finalDensity: 1 - (config.finalSparsity ?? config.sparsity),
            pruneEnd: config.pruneEnd ?? AlgorithmSettings.defaultPruneEnd)
        try schedule.validate()
        return RigLPolicy(schedule: schedule, epochs: config.totalEpochs)
    default:
        return FixedMaskPolicy(epochs: config.totalEpochs)
    }
}
