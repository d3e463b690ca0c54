import NN
import Sparsity

/// Iterative magnitude pruning (see `AlgorithmSettings`): cycles of training, each ending with a
/// global magnitude prune to the plan's next count, a rewind of every parameter to the snapshot
/// taken at `rewindEpoch`, cleared momentum and a restarted LR schedule; then a final retrain.
final class IMPPolicy: MaskPolicy {
    let plan: IMPPlan
    let cycleEpochs: Int, finalEpochs: Int, rewindEpoch: Int, stepsPerEpoch: Int
    /// Parameter values to rewind to (store layout); nil until taken.
    private(set) var snapshot: [Float]?
    /// Active weights when the run started (the plan's counts are fractions of it).
    private(set) var startCount = 0

    init(plan: IMPPlan, cycleEpochs: Int, finalEpochs: Int, rewindEpoch: Int, stepsPerEpoch: Int) {
        self.plan = plan
        self.cycleEpochs = cycleEpochs
        self.finalEpochs = finalEpochs
        self.rewindEpoch = rewindEpoch
        self.stepsPerEpoch = stepsPerEpoch
    }

    private var cycleSteps: Int { cycleEpochs * stepsPerEpoch }

    func phase(containing epoch: Int) -> SchedulePhase {
        let cycle = epoch / cycleEpochs
        if cycle < plan.cycles {
            return SchedulePhase(start: cycle * cycleEpochs, length: cycleEpochs, name: "imp cycle \(cycle + 1)/\(plan.cycles)")
        }
        return SchedulePhase(start: plan.cycles * cycleEpochs, length: finalEpochs, name: "imp final retrain")
    }

    func changesMask(afterStep t: Int) -> Bool {
        t % cycleSteps == 0 && (1...plan.cycles).contains(t / cycleSteps)
    }

    func needsDenseGradient(atStep t: Int) -> Bool { false }

    func begin(masks: MaskState) {
        startCount = masks.activeTotal
        if rewindEpoch == 0 { snapshot = Array(masks.store.values) }
    }

    func didStep(_ t: Int, masks: MaskState) {
        if rewindEpoch > 0 && t == rewindEpoch * stepsPerEpoch { snapshot = Array(masks.store.values) }
    }

    func propose(afterStep t: Int, masks: MaskState, proposal: UnsafeMutableBufferPointer<Float>) -> String {
        let k = t / cycleSteps
        let keep = plan.activeCount(afterCycle: k, start: startCount, total: masks.maskableTotal)
        magnitudePrune(masks.layers, values: UnsafeBufferPointer(masks.store.values), mask: proposal, density: .globalCount(keep))
        return "imp cycle \(k)/\(plan.cycles)"
    }

    /// Rewinds every parameter (weights, biases, BN γ/β) and clears momentum.
    func didChangeMask(afterStep t: Int, masks: MaskState) {
        guard let snapshot else { preconditionFailure("IMP pruned before its rewind point was recorded") }
        let store = masks.store
        snapshot.withUnsafeBufferPointer { store.values.baseAddress!.update(from: $0.baseAddress!, count: store.count) }
        store.zeroMomentum()
        masks.zeroInactive()
    }

    func stateTensors(masks: MaskState) -> [(name: String, shape: [Int], values: [Float])] {
        var out: [(name: String, shape: [Int], values: [Float])] = [
            // Two 16-bit halves: a Float holds integers exactly only up to 2^24.
            ("imp/start_count", [2], [Float(startCount >> 16), Float(startCount & 0xFFFF)]),
        ]
        if let snapshot { out.append(("imp/rewind", [snapshot.count], snapshot)) }
        return out
    }

    func restoreState(_ tensor: (String) -> [Float]?, masks: MaskState) throws {
        guard let start = tensor("imp/start_count"), start.count == 2 else {
            throw ConfigError("checkpoint lacks IMP's state (imp/start_count)")
        }
        startCount = Int(start[0]) << 16 + Int(start[1])
        if let s = tensor("imp/rewind") {
            guard s.count == masks.store.count else { throw ConfigError("checkpoint's IMP rewind point has \(s.count) values, the model \(masks.store.count)") }
            snapshot = s
        }
    }
}
