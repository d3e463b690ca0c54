import Foundation
import NN
import Sparsity

/// Edge-popup inside the ER mask (see `AlgorithmSettings`): levels of `levelEpochs`, each with its
/// own LR schedule run; in level i (1…L) layer l uses exactly
/// `k_{l,i} = round(a_l · (T_l/a_l)^(i/L))` weights — `a_l` its active count at the start, `T_l`
/// its final count (the density rule at `final_sparsity`, at most `a_l`) — so the last level lands
/// on `T_l` exactly. After the last step rank 0 makes the final subnetwork the mask.
final class EdgePopupPolicy: MaskPolicy {
    let levels: Int, levelEpochs: Int, stepsPerEpoch: Int
    let scores: EdgePopupScores
    /// Final active count per layer.
    let targets: [Int]
    /// Active counts at the start (read from the mask the first time they are needed).
    private var start: [Int]?

    init(levels: Int, levelEpochs: Int, stepsPerEpoch: Int, scores: EdgePopupScores, targets: [Int]) {
        self.levels = levels
        self.levelEpochs = levelEpochs
        self.stepsPerEpoch = stepsPerEpoch
        self.scores = scores
        self.targets = targets
    }

    var totalSteps: Int { levels * levelEpochs * stepsPerEpoch }

    func phase(containing epoch: Int) -> SchedulePhase {
        let level = min(epoch / levelEpochs, levels - 1)
        return SchedulePhase(start: level * levelEpochs, length: levelEpochs, name: "edge-popup level \(level + 1)/\(levels)")
    }

    /// Weights layer l uses in level `level` (1…levels), given its active counts `a` at the start.
    static func keep(level: Int, levels: Int, start a: [Int], targets: [Int]) -> [Int] {
        zip(a, targets).map { a, t in
            let target = min(t, a)
            guard level < levels, a > 0 else { return target }
            let k = Double(a) * pow(Double(target) / Double(a), Double(level) / Double(levels))
            return max(target, min(a, Int(k.rounded())))
        }
    }

    func prepare(epoch: Int, store: ParameterStore) {
        let a = start ?? activeCounts(scores.layers, mask: UnsafeBufferPointer(store.mask))
        start = a
        scores.keep = Self.keep(level: phase(containing: epoch).start / levelEpochs + 1, levels: levels, start: a, targets: targets)
    }

    func changesMask(afterStep t: Int) -> Bool { t == totalSteps }
    func needsDenseGradient(atStep t: Int) -> Bool { false }

    func propose(afterStep t: Int, masks: MaskState, proposal: UnsafeMutableBufferPointer<Float>) -> String {
        masks.store.refreshEffective()   // the selection of the scores after the last update
        scores.selectionMask(proposal: proposal)
        return "edge-popup final subnetwork"
    }
}
