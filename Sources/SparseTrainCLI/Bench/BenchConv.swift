import ArgumentParser
import Foundation
import NN
import Tensor

/// `sparsetrain bench conv`: forward + backward of single 3×3 convolutions (the shapes of
/// ResNet-20 and VGG16 on CIFAR) with the direct kernel and with im2col + sgemm, side by side.
struct BenchConv: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conv", abstract: "Time 3×3 convolutions: direct kernel vs im2col + sgemm.")

    @Option(help: "Images per step.")
    var batch: Int = 128

    @Option(help: "Threads (parallel loops over images). Default: all cores.")
    var threads: Int?

    @Option(help: "Timed repetitions (the median is reported).")
    var steps: Int = 5

    @Option(help: ArgumentHelp("Layers as CIN:COUT:SIZE, comma-separated (square inputs).", valueName: "list"))
    var shapes: String = "16:16:32,32:32:16,64:64:8,64:64:32,128:128:16,256:256:8,512:512:4"

    @Flag(help: "Print one JSON object per shape instead of a table.")
    var json = false

    struct Row: Codable {
        var in_channels: Int, out_channels: Int, size: Int
        var gemm_ms: Double, direct_ms: Double?, speedup: Double?
        var gemm_gflops: Double, direct_gflops: Double?
        var automatic: String
    }

    func parseShapes() throws -> [(Int, Int, Int)] {
        try shapes.split(separator: ",").map { item in
            let parts = item.split(separator: ":").compactMap { Int($0) }
            guard parts.count == 3, parts.allSatisfy({ $0 > 0 }) else {
                throw InputError("--shapes: '\(item)' is not CIN:COUT:SIZE with positive numbers")
            }
            return (parts[0], parts[1], parts[2])
        }
    }

    func validate() throws {
        guard batch > 0, steps > 0 else { throw InputError("--batch and --steps must be positive") }
        if let t = threads, t < 1 { throw InputError("--threads must be at least 1") }
        _ = try parseShapes()
    }

    func run() throws {
        let threadCount = threads ?? ProcessInfo.processInfo.activeProcessorCount
        BLAS.threads = threadCount > 1 ? 1 : threadCount
        var rows: [Row] = []
        for (cin, cout, size) in try parseShapes() {
            let store = ParameterStore()
            let conv = Conv2d("c", store: store, inChannels: cin, outChannels: cout, kernelSize: 3, padding: 1)
            store.allocate(seed: 1)
            let x = Tensor(Shape(n: batch, c: cin, h: size, w: size))
            var rng = Xoshiro256(seed: 2)
            for i in 0..<x.count { x.data[i] = rng.nextFloat() - 0.5 }
            let flops = 3 * conv.forwardFlops(for: x.shape)
            let ctx = Context()
            ctx.threads = threadCount
            func time(_ algorithm: ConvolutionAlgorithm) -> Double {
                ctx.convolutionAlgorithm = algorithm
                var samples: [Double] = []
                for k in 0..<(steps + 1) {
                    let t0 = now()
                    let y = conv.forward(x, ctx)
                    let dy = ctx.gradientBuffer(y.shape)
                    dy.data.update(repeating: 0.01, count: dy.count)
                    ctx.release(conv.backward(dy, ctx))
                    if k > 0 { samples.append(now() - t0) }
                }
                return median(samples)
            }
            ctx.convolutionAlgorithm = .direct
            let directApplies = conv.usesDirectKernel(x.shape, ctx)
            let gemmSeconds = time(.gemm)
            let directSeconds = directApplies ? time(.direct) : nil
            ctx.convolutionAlgorithm = .automatic
            rows.append(Row(
                in_channels: cin, out_channels: cout, size: size, gemm_ms: gemmSeconds * 1e3,
                direct_ms: directSeconds.map { $0 * 1e3 }, speedup: directSeconds.map { gemmSeconds / $0 },
                gemm_gflops: flops / gemmSeconds / 1e9, direct_gflops: directSeconds.map { flops / $0 / 1e9 },
                automatic: conv.usesDirectKernel(x.shape, ctx) ? "direct" : "gemm"))
        }
        if json {
            for r in rows { print(try jsonLine(r)) }
            return
        }
        print("bench conv: 3×3 stride 1, forward + backward, batch \(batch), \(threadCount) thread(s), median of \(steps)")
        var table = TextTable("cin", "cout", "size", "gemm ms", "gemm GFLOP/s", "direct ms", "direct GFLOP/s", "speedup", "automatic")
        for r in rows {
            table.add("\(r.in_channels)", "\(r.out_channels)", "\(r.size)", fixed(r.gemm_ms, 2), fixed(r.gemm_gflops, 1),
                      r.direct_ms.map { fixed($0, 2) } ?? "n/a", r.direct_gflops.map { fixed($0, 1) } ?? "n/a",
                      r.speedup.map { fixed($0, 2) + "x" } ?? "n/a", r.automatic)
        }
        print(table.render())
    }
}
