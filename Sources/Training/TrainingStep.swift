import Comm
import Dispatch
import NN
import Sparsity
import Tensor

/// One training step on one rank: forward, loss, backward with the gradients reduced across
/// ranks, and the optimizer step. Ordinary steps reduce the packed active entries, in buckets
/// started during backward; steps that need the dense gradient (RiGL updates) reduce the whole
/// gradient buffer instead, counted apart. With a weight transform (STR, edge-popup) the reduced
/// gradients of the effective weights are turned into those of the trained parameters before the
/// optimizer step. Shared by `train` and the tests.
public final class TrainingStep {
    public let network: Network
    public let masks: MaskState
    let comm: Communicator
    let loss: SoftmaxCrossEntropy
    let sgd: SGD
    let threads: Int
    /// The packed reducer for the mask's current generation.
    public private(set) var reducer: GradientReducer
    /// The reduction thread's communicator (a duplicate of `comm`), nil without a thread.
    private let reductionCommunicator: Communicator?
    private var reducerGeneration: Int
    /// Bytes of packed reductions by reducers of earlier generations.
    private var earlierPackedBytes = 0
    /// Bytes passed to dense-gradient allreduces.
    public private(set) var denseBytes = 0
    private var denseStep = false
    /// Parameter (= reducer segment) index of each maskable tensor, in `masks.activeIndices` order.
    private let maskedParameters: [Int]
    /// Set after the first step and after mask changes: rank 0's kernel choices go to all ranks.
    private var shareChoicesAfterStep = true
    private var reduceError: Error?
    /// Set by the first `run`.
    private var ranOnce = false
    /// The last `run` reduced the dense gradient (a RiGL update).
    private var lastRunWasDense = false

    /// Collective: every rank builds its step at the same point. `communicationThread` decides
    /// whether buckets are reduced on a communication thread (all ranks agree on it).
    public init(network: Network, masks: MaskState, communicator: Communicator, loss: SoftmaxCrossEntropy, sgd: SGD,
                threads: Int, communicationThread: CommunicationThreadMode = .auto) throws {
        self.network = network
        self.masks = masks
        self.comm = communicator
        self.loss = loss
        self.sgd = sgd
        self.threads = threads
        maskedParameters = network.store.parameters.filter(\.maskable).map(\.ref.index)
        reductionCommunicator = try Self.reductionCommunicator(communicator, mode: communicationThread, threads: threads)
        reducer = try Self.makeReducer(masks, communicator, thread: reductionCommunicator)
        reducerGeneration = masks.generation
        // The reducer has read the dense mask: sparse weights' masks live in their positions.
        network.store.releaseMaskPages()
        attachToStore()
    }

    /// Points the store's gradient-ready hook at this step's reducer (done again by every `run`,
    /// so that several steps over one network — a benchmark's local and world steps — each
    /// reduce through their own).
    private func attachToStore() {
        network.store.onGradientReady = { [unowned self] ref in
            guard !self.denseStep else { return }
            let packed = self.network.store.gradientPlacement[ref.index] == .packed
            do { try self.reducer.segmentReady(ref.index, bornPacked: packed) } catch {
                if self.reduceError == nil { self.reduceError = error }
            }
        }
    }

    /// The communicator of the reduction thread, or nil without one. Every rank wants the
    /// thread or none does (an allreduce of the wish); `on` where MPI cannot run it is an error.
    private static func reductionCommunicator(_ comm: Communicator, mode: CommunicationThreadMode, threads: Int) throws -> Communicator? {
        guard comm.size > 1 else { return nil }
        let spareCore = nodeHasSpareCore(threadsPerRank: threads)
        let wish: Bool
        switch mode {
        case .off: wish = false
        case .on: wish = true
        case .auto: wish = comm.allowsConcurrentCalls && spareCore
        }
        var flags: [Int32] = [wish ? 1 : 0, comm.allowsConcurrentCalls ? 1 : 0]
        try comm.allreduce(&flags, op: .min, counts: .trusted)
        if mode == .on && flags[1] == 0 {
            throw CommError.invalidArgument("comm_thread: on needs an MPI with MPI_THREAD_MULTIPLE on every rank")
        }
        return flags[0] == 1 ? try comm.duplicate() : nil
    }

    private static func makeReducer(_ masks: MaskState, _ comm: Communicator, thread: Communicator?) throws -> GradientReducer {
        // Masked segments are the maskable weights, in the order of the mask's layers.
        var layerOfSegment: [Int: Int] = [:]
        for (l, p) in masks.store.parameters.filter(\.maskable).enumerated() { layerOfSegment[p.ref.index] = l }
        let reducer = try GradientReducer(segments: masks.store.segments, total: masks.store.count,
                                          activePositions: { masks.activeIndices[layerOfSegment[$0]!] },
                                          communicator: comm, result: .sum)
        if let thread {
            reducer.useReductionThread(on: thread)
        } else {
            // Below 4 ranks the non-blocking allreduce costs more than overlapping it hides.
            reducer.overlapsBackward = comm.size >= 4
        }
        return reducer
    }

    /// Rebuilds the reducer's plan for the current mask (collective: every rank calls it).
    public func rebuildReducer() throws {
        earlierPackedBytes += reducer.bytesReduced
        reducer = try Self.makeReducer(masks, comm, thread: reductionCommunicator)
        reducerGeneration = masks.generation
        shareChoicesAfterStep = true
    }

    /// Zeroes the gradients backward adds into: whole tensors, except that a weight whose layer
    /// wrote only its mask's entries last time (sparse weight gradient) gets only those zeroed
    /// (its other entries are never read: the reducer packs active entries, the optimizer visits
    /// them), and one born packed last time nothing. Steps that need the dense gradient zero
    /// everything. The first step, and the first after a dense-gradient step, zero maskable
    /// weights by releasing their pages, so the dense gradient of a weight that is then written
    /// born packed takes no memory between mask changes.
    private func zeroGradients(dense: Bool) {
        let store = network.store
        let firstStep = !ranOnce || lastRunWasDense
        ranOnce = true
        lastRunWasDense = dense
        var t = 0
        for p in store.parameters {
            defer { if p.maskable { t += 1 } }
            let g = store.gradient(p.ref)
            switch (dense, p.maskable, store.gradientPlacement[p.ref.index]) {
            case (false, true, .packed):
                break // written into the reducer's slot, zeroed there by the layer
            case (false, true, .atMaskOnly):
                masks.activeIndices[t].withUnsafeBufferPointer { idx in for j in idx { g[Int(j)] = 0 } }
            case (false, true, _) where firstStep:
                // Let the pages of a weight whose layer writes its gradient born packed stay unused
                // (after a dense-gradient step: give them back).
                store.zeroGradientReleasingPages(p.ref)
            default:
                g.update(repeating: 0, count: p.ref.count)
            }
        }
    }

    /// Every rank adopts rank 0's dense-or-sparse kernel choices (collective), so all ranks take
    /// the same paths from here on, as a run resumed from rank 0's checkpoint will.
    private func shareKernelChoices() throws {
        shareChoicesAfterStep = false
        guard comm.size > 1 else { return }
        var text = Array(network.ctx.kernelChoicesText.utf8)
        var length: [Int64] = [Int64(text.count)]
        try comm.broadcast(&length, root: 0, counts: .trusted)
        guard length[0] > 0 else { return }
        if comm.rank != 0 { text = [UInt8](repeating: 0, count: Int(length[0])) }
        try comm.broadcast(&text, root: 0, counts: .trusted)
        if comm.rank != 0 { network.ctx.kernelChoicesText = String(decoding: text, as: UTF8.self) }
    }

    /// Bytes of packed gradient reductions since the step was built.
    public var packedBytes: Int { earlierPackedBytes + reducer.bytesReduced }

    /// Runs one step on `batch` images of this rank; the loss is normalised by `normalizer`
    /// (the global batch), gradients are summed over ranks. Returns this rank's loss share and
    /// correct count.
    @discardableResult
    public func run(images: UnsafePointer<Float>, labels: UnsafePointer<Int32>, batch: Int, normalizer: Float,
                    learningRate: Float, denseGradient: Bool = false) throws -> (loss: Float, correct: Int) {
        precondition(reducerGeneration == masks.generation, "the reducer is stale: the mask changed without rebuildReducer()")
        let store = network.store
        attachToStore()
        zeroGradients(dense: denseGradient)
        denseStep = denseGradient
        store.packedGradientSlot = denseGradient ? nil : { [unowned self] ref in self.reducer.packedSlot(segment: ref.index) }
        defer { store.packedGradientSlot = nil }
        if !denseGradient {
            reducer.beginStep(gradients: store.gradients)
            // Gradients a weight transform derives after the reduction get nothing from backward.
            for ref in store.transform?.derivedParameters ?? [] { try reducer.segmentReady(ref.index) }
        }
        network.ctx.denseWeightGradient = denseGradient
        defer { network.ctx.denseWeightGradient = false }
        let logits = network.forward(images: images, batch: batch)
        let (l, c) = loss(logits, labels: labels, normalizer: normalizer, ctx: network.ctx)
        network.backward(loss.gradient)
        if let e = reduceError { reduceError = nil; throw e }
        if denseGradient {
            try comm.allreduce(store.gradients, op: .sum, counts: .trusted)
            denseBytes += store.count * MemoryLayout<Float>.stride
        } else {
            try reducer.finishStep()
        }
        store.transform?.backpropagate(store)
        if store.transform == nil {
            // Masked weights and momentum are +0 and stay so: visit the active entries only.
            // Born-packed weights: the optimizer reads the reduced packed slot.
            let packed = maskedParameters.map { denseGradient ? nil : reducer.reducedPackedGradient(segment: $0) }
            sgd.step(store, learningRate: learningRate, active: masks.activeIndices, packedGradients: packed, threads: threads)
        } else {
            sgd.step(store, learningRate: learningRate, threads: threads)
        }
        if shareChoicesAfterStep { try shareKernelChoices() }
        return (l, Int(c))
    }
}
