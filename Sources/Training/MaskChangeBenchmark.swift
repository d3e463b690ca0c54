import Dispatch
import Comm
import NN
import Sparsity
import Tensor

/// Times RiGL mask changes through the same path training uses: an ER mask at `density` (ERK
/// ratios, drawn by rank 0 and broadcast), random dense gradients, then `repeats` changes, each
/// rewiring every layer with drop fraction `alpha` (decide on rank 0, broadcast, apply, rebuild
/// the reducer, checksums), then the sparse kernels' indices of every masked layer rebuilt (in
/// training that happens at each layer's next pass, with the rank's `threads`). Every rank must
/// call it.
/// - Returns: one event per change, with its parts in ms, and the ms of the index rebuilds.
public func benchmarkRiGLChanges(
    network: Network, communicator comm: Communicator, density: Double, alpha: Double, repeats: Int, threads: Int = 1,
    seed: UInt64 = 1
) throws -> [(event: MaskEvent, msKernelIndices: Double)] {
    let store = network.store
    let layers = MaskableLayer.all(in: store)
    if comm.rank == 0 {
        let d = try layerwiseDensities(layers, density: density, method: .erk)
        drawMasks(layers, densities: d, nonZeros: nonZeroCounts(layers, densities: d, density: density), mode: .count,
                  seed: seed, into: store.mask)
    }
    try MaskSync.broadcastMask(store.mask, segments: store.segments, root: 0, communicator: comm)
    store.applyMask()
    var rng = Xoshiro256(seed: seed &+ 1)
    for i in 0..<store.count { store.gradients[i] = rng.nextFloat() - 0.5 }
    let masks = MaskState(store: store)
    let step = try TrainingStep(network: network, masks: masks, communicator: comm, loss: SoftmaxCrossEntropy(), sgd: SGD(),
                                threads: 1)
    let path = MaskChangePath(masks: masks, communicator: comm, step: step)
    let schedule = RigLSchedule(updateEvery: 1, alpha: alpha, end: 1, totalSteps: 1 << 30, startDensity: density,
                                finalDensity: density, pruneEnd: 1)
    let policy = RigLPolicy(schedule: schedule, epochs: 1)
    let ctx = Context()
    ctx.sparseKernels = .on
    ctx.threads = threads
    network.body.refreshSparseKernels(ctx)  // indices allocated once, as in training
    return try (1...max(1, repeats)).map { t in
        let event = try path.apply(afterStep: t, epoch: 0, policy: policy)
        let t0 = DispatchTime.now().uptimeNanoseconds
        network.body.refreshSparseKernels(ctx)
        return (event, Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-6)
    }
}
