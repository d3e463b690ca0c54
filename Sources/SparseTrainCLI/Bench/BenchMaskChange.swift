import ArgumentParser
import Comm
import Foundation
import NN
import Tensor
import Training

/// `sparsetrain bench mask-change`: what one RiGL mask change costs, part by part, next to the
/// time of the 100 training steps between two changes.
struct BenchMaskChange: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mask-change",
        abstract: "Time a RiGL mask change (decide on rank 0, broadcast, apply, rebuild, verify) against 100 training steps.")

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Density of the ER mask (ERK ratios).")
    var density: Double = 0.1

    @Option(help: "Drop fraction of each change.")
    var alpha: Double = 0.3

    @Option(help: "Changes timed (the median is reported).")
    var repeats: Int = 5

    @Option(help: "Per-rank batch of the training step timed for comparison (0: skip).")
    var batch: Int = 128

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    struct Report: Codable {
        var model: String, ranks: Int, density: Double, alpha: Double, masked_weights: Int
        var ms: Double, ms_decide: Double, ms_broadcast: Double, ms_apply: Double, ms_rebuild: Double, ms_verify: Double
        /// Rebuilding the sparse kernels' indices of every masked layer (not in `ms`: in
        /// training each layer does it at its next pass).
        var ms_kernel_indices: Double
        var bytes_broadcast: Int, moved: Int
        var step_ms: Double?, share_of_100_steps: Double?
    }

    func run() throws {
        guard density > 0, density <= 1 else { throw InputError("--density must be in (0, 1]") }
        guard alpha > 0, alpha <= 1 else { throw InputError("--alpha must be in (0, 1]") }
        guard repeats >= 1, batch >= 0 else { throw InputError("--repeats must be positive and --batch not negative") }
        withWorld { comm in
            let net = try modelOptions.build()
            // Threads per rank as training gives them: the cores shared by this node's ranks.
            let threads = max(1, ProcessInfo.processInfo.activeProcessorCount / ranksOnThisNode())
            let changes = try benchmarkRiGLChanges(network: net, communicator: comm, density: density, alpha: alpha, repeats: repeats,
                                                   threads: threads)
            let events = changes.map(\.event)
            let stepSeconds = batch > 0 ? try timeStep(net) : nil
            guard comm.rank == 0 else { return }
            func med(_ f: (MaskEvent) -> Double) -> Double { median(events.map(f)) }
            let total = med(\.ms)
            let report = Report(
                model: modelOptions.model.rawValue, ranks: comm.size, density: density, alpha: alpha,
                masked_weights: net.store.maskableCount, ms: total, ms_decide: med(\.ms_decide), ms_broadcast: med(\.ms_broadcast),
                ms_apply: med(\.ms_apply), ms_rebuild: med(\.ms_rebuild), ms_verify: med(\.ms_verify),
                ms_kernel_indices: median(changes.map(\.msKernelIndices)),
                bytes_broadcast: events[0].bytes_broadcast, moved: events[0].dropped + events[0].grown,
                step_ms: stepSeconds.map { $0 * 1e3 }, share_of_100_steps: stepSeconds.map { total / ($0 * 1e5) })
            if json { print(try jsonLine(report)); return }
            print("bench mask-change: \(report.model), \(report.masked_weights) masked weights, density \(density), α \(alpha), "
                + "\(comm.size) rank(s), median of \(repeats); OpenBLAS kernel \(BLAS.coreName)")
            var table = TextTable("part", "ms")
            for (name, v) in [("decide (rank 0: rewire every layer)", report.ms_decide), ("broadcast (1 bit/weight)", report.ms_broadcast),
                              ("apply to weights and momentum", report.ms_apply), ("rebuild reducer", report.ms_rebuild),
                              ("verify checksums", report.ms_verify), ("total", total)] {
                table.add(name, fixed(v, 2))
            }
            table.add("sparse kernel indices, every layer (at its next pass; \(threads) thread(s))", fixed(report.ms_kernel_indices, 2))
            print(table.render())
            print("broadcast \(report.bytes_broadcast) bytes, \(report.moved) weights moved by the first change")
            if let s = report.step_ms, let share = report.share_of_100_steps {
                print("training step (batch \(batch), 1 thread): \(fixed(s, 1)) ms; one change = \(fixed(100 * share, 2))% of 100 steps")
            }
        }
    }

    /// Median seconds of a training step on this rank (forward, backward, SGD; no reduction).
    private func timeStep(_ net: Network) throws -> Double {
        var rng = Xoshiro256(seed: 3)
        let images = (0..<(batch * net.imageSize)).map { _ in rng.nextFloat() * 2 - 1 }
        let labels = (0..<batch).map { _ in Int32(rng.nextIndex(below: net.classes)) }
        let loss = SoftmaxCrossEntropy()
        let sgd = SGD()
        net.store.onGradientReady = nil
        var times: [Double] = []
        for _ in 0..<3 {
            let t0 = now()
            net.store.zeroGradients()
            let logits = images.withUnsafeBufferPointer { net.forward(images: $0.baseAddress!, batch: batch) }
            _ = labels.withUnsafeBufferPointer { loss(logits, labels: $0.baseAddress!, normalizer: Float(batch), ctx: net.ctx) }
            net.backward(loss.gradient)
            sgd.step(net.store, learningRate: 0.01)
            times.append(now() - t0)
        }
        return median(times)
    }
}
