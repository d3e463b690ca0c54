import ArgumentParser
import Foundation
import NN
import Tensor

/// `sparsetrain bench conv`: forward + backward of single convolutions (by default 3×3 stride 1,
/// the shapes of ResNet-20 and VGG16 on CIFAR; `--kernel` and `--stride` for others, such as
/// ResNet-50's 7×7 stride-2 stem) with each variant of the direct kernel this CPU runs (AVX2,
/// AVX-512; 3×3 stride 1 only) and with im2col + sgemm, side by side, timed in interleaved
/// rounds; with `--densities`, the sparse convolution passes at those densities against the
/// dense step.
struct BenchConv: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conv", abstract: "Time convolutions (3×3 by default): direct kernel vs im2col + sgemm, and the sparse passes.")

    /// Name of the small-image kernels (AVX-512, H·W divides 16) in the table.
    static let smallImages = "small images"
    /// Name of the pixel product (3×3 on images of at most 2×2 as one GEMM over images) in the table.
    static let pixelProduct = "pixel product"
    /// The Winograd columns' names (F(2×2, 3×3), F(4×4, 3×3)).
    static let winograd = "Winograd 2×2", winograd4 = "Winograd 4×4"

    @Option(help: "Images per step.")
    var batch: Int = 128

    @Option(help: "Threads (parallel loops over images). Default: all cores.")
    var threads: Int?

    @Option(help: "Timed repetitions (the median is reported).")
    var steps: Int = 5

    @Option(help: ArgumentHelp("Layers as CIN:COUT:SIZE, comma-separated (square inputs).", valueName: "list"))
    var shapes: String = "16:16:32,32:32:16,64:64:8,64:64:32,128:128:16,256:256:8,256:512:4,512:512:4,512:512:2"

    @Option(help: "Kernel size (odd; padding kernel / 2).")
    var kernel: Int = 3

    @Option(help: "Stride (1 or 2).")
    var stride: Int = 1

    @Option(help: ArgumentHelp("Also time the sparse passes at these densities, comma-separated.", valueName: "list"))
    var densities: String?

    @Option(help: "Kernel variant of the sparse passes: avx512, avx2 or portable. Default: the widest this CPU runs.")
    var isa: String?

    @Option(help: "Layout of the sparse passes: automatic (as training chooses), frames, or planes (unpadded planes; stride 2 on the input's phases, even sizes).")
    var layout: SparseConvolution.Layout = .automatic

    @Flag(help: "Print one JSON object per shape instead of a table.")
    var json = false

    struct Row: Codable {
        var in_channels: Int, out_channels: Int, size: Int
        var gemm_ms: Double, direct_ms: Double?, speedup: Double?
        var gemm_gflops: Double, direct_gflops: Double?
        /// Milliseconds of each direct kernel that applies ("AVX2+FMA", "AVX-512F", "small images").
        var direct_ms_by_isa: [String: Double]
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
        guard kernel > 0, kernel % 2 == 1 else { throw InputError("--kernel must be an odd positive number") }
        guard stride == 1 || stride == 2 else { throw InputError("--stride must be 1 or 2") }
        if let small = try parseShapes().first(where: { $0.2 + 2 * (kernel / 2) < kernel }) {
            throw InputError("--shapes: size \(small.2) is too small for a \(kernel)×\(kernel) kernel")
        }
        if let t = threads, t < 1 { throw InputError("--threads must be at least 1") }
        _ = try parseShapes()
        _ = try parsedDensities()
        _ = try selectedISA(isa)
    }

    func run() throws {
        let threadCount = threads ?? ProcessInfo.processInfo.activeProcessorCount
        BLAS.threads = threadCount > 1 ? 1 : threadCount
        var rows: [Row] = []
        for (cin, cout, size) in try parseShapes() {
            let store = ParameterStore()
            let conv = Conv2d("c", store: store, inChannels: cin, outChannels: cout, kernelSize: kernel, stride: stride,
                              padding: kernel / 2)
            store.allocate(seed: 1)
            let x = Tensor(Shape(n: batch, c: cin, h: size, w: size))
            var rng = Xoshiro256(seed: 2)
            for i in 0..<x.count { x.data[i] = rng.nextFloat() - 0.5 }
            let flops = 3 * conv.forwardFlops(for: x.shape)
            let ctx = Context()
            ctx.threads = threadCount
            func step(_ algorithm: ConvolutionAlgorithm, _ isa: KernelISA) -> () -> Void {
                {
                    ctx.convolutionAlgorithm = algorithm
                    ctx.kernelISA = isa
                    let y = conv.forward(x, ctx)
                    let dy = ctx.gradientBuffer(y.shape)
                    dy.data.update(repeating: 0.01, count: dy.count)
                    ctx.release(conv.backward(dy, ctx))
                }
            }
            // The direct kernel each instruction set runs here ("AVX2+FMA", "AVX-512F", "small images").
            func directName() -> String? {
                guard let kernel = conv.directKernel(x.shape, ctx) else { return nil }
                if kernel == .smallImages { return BenchConv.smallImages }
                return Conv3x3.variant(outChannels: cout, width: size, widest: ctx.kernelISA)?.description
            }
            ctx.convolutionAlgorithm = .direct
            var direct: [(name: String, isa: KernelISA)] = []
            for isa in [KernelISA.avx2, .avx512] where isa.rawValue <= KernelISA.best.rawValue && Conv3x3.isSupported(isa) {
                ctx.kernelISA = isa
                if let name = directName(), !direct.contains(where: { $0.name == name }) { direct.append((name, isa)) }
            }
            // The pixel product (images of at most 2×2) runs under the automatic choice.
            var timed = [step(.gemm, .best)] + direct.map { step(.direct, $0.isa) }
            ctx.convolutionAlgorithm = .automatic
            if conv.usesPixelProduct(x.shape, ctx) {
                direct.append((BenchConv.pixelProduct, .best))
                timed.append(step(.automatic, .best))
            }
            for (algorithm, name) in [(ConvolutionAlgorithm.winograd, BenchConv.winograd), (.winograd4, BenchConv.winograd4)] {
                ctx.convolutionAlgorithm = algorithm
                if conv.usesWinograd(x.shape, ctx) {
                    direct.append((name, .best))
                    timed.append(step(algorithm, .best))
                }
            }
            let seconds = interleavedMedianSeconds(runs: steps, timed)
            let gemmSeconds = seconds[0], directSeconds = seconds.dropFirst().min()
            ctx.convolutionAlgorithm = .automatic
            ctx.kernelISA = .best
            let automatic = conv.usesPixelProduct(x.shape, ctx) ? BenchConv.pixelProduct
                : conv.winograd(x.shape, ctx).map { $0.tile == 4 ? BenchConv.winograd4 : BenchConv.winograd }
                ?? directName().map { "direct " + $0 } ?? "gemm"
            rows.append(Row(
                in_channels: cin, out_channels: cout, size: size, gemm_ms: gemmSeconds * 1e3,
                direct_ms: directSeconds.map { $0 * 1e3 }, speedup: directSeconds.map { gemmSeconds / $0 },
                gemm_gflops: flops / gemmSeconds / 1e9, direct_gflops: directSeconds.map { flops / $0 / 1e9 },
                direct_ms_by_isa: Dictionary(uniqueKeysWithValues: zip(direct.map(\.name), seconds.dropFirst().map { $0 * 1e3 })),
                automatic: automatic))
        }
        if json {
            for r in rows { print(try jsonLine(r)) }
            try runSparse(dense: rows, threads: threadCount)
            return
        }
        print("bench conv: \(kernel)×\(kernel) stride \(stride), forward + backward, batch \(batch), \(threadCount) thread(s), median of \(steps) interleaved rounds, "
              + "OpenBLAS kernel \(BLAS.coreName)")
        let kernels = [KernelISA.avx2.description, KernelISA.avx512.description, BenchConv.smallImages, BenchConv.pixelProduct,
                       BenchConv.winograd, BenchConv.winograd4]
        // The direct kernels are named by instruction set; the products over images and Winograd by themselves.
        let direct: Set = [KernelISA.avx2.description, KernelISA.avx512.description, BenchConv.smallImages]
        var table = TextTable(["cin", "cout", "size", "gemm ms", "gemm GFLOP/s"]
                              + kernels.map { direct.contains($0) ? "direct \($0) ms" : "\($0) ms" }
                              + ["best GFLOP/s (direct count)", "speedup", "automatic"])
        for r in rows {
            let shape: [String] = ["\(r.in_channels)", "\(r.out_channels)", "\(r.size)", fixed(r.gemm_ms, 2), fixed(r.gemm_gflops, 1)]
            let direct: [String] = kernels.map { name in r.direct_ms_by_isa[name].map { fixed($0, 2) } ?? "n/a" }
            let best: String = r.direct_gflops.map { fixed($0, 1) } ?? "n/a"
            let speedup: String = r.speedup.map { fixed($0, 2) + "x" } ?? "n/a"
            table.add(shape + direct + [best, speedup, r.automatic])
        }
        print(table.render())
        try runSparse(dense: rows, threads: threadCount)
    }

    func parsedDensities() throws -> [Double] {
        try (densities ?? "").split(separator: ",").map {
            guard let d = Double($0), d > 0, d <= 1 else { throw InputError("--densities: '\($0)' is not a number in (0, 1]") }
            return d
        }
    }

    struct SparseRow: Codable {
        var in_channels: Int, out_channels: Int, size: Int, density: Double
        var dense_step_ms: Double, forward_ms: Double, input_gradient_ms: Double, weight_gradient_ms: Double
        var speedup: Double
    }

    /// The sparse passes (`SparseConvolution`: forward, input gradient, packed weight gradient)
    /// on random masks, against the faster dense forward + backward of each layer (`dense`).
    func runSparse(dense: [Row], threads: Int) throws {
        let list = try parsedDensities(), variant = try selectedISA(isa)
        guard !list.isEmpty else { return }
        var rows: [SparseRow] = []
        var rng = Xoshiro256(seed: 3)
        func random(_ shape: Shape) -> Tensor {
            let t = Tensor(shape)
            for i in 0..<t.count { t.data[i] = rng.nextFloat() - 0.5 }
            return t
        }
        for r in dense {
            let cin = r.in_channels, cout = r.out_channels, size = r.size, count = cout * cin * kernel * kernel
            let denseStep = min(r.gemm_ms, r.direct_ms ?? .infinity) / 1e3, outSize = (size + 2 * (kernel / 2) - kernel) / stride + 1
            let x = random(Shape(n: batch, c: cin, h: size, w: size)), dy = random(Shape(n: batch, c: cout, h: outSize, w: outSize))
            let w = random(Shape(n: 1, c: count)).data, out = Tensor(dy.shape), dx = Tensor(x.shape)
            let mask = UnsafeMutablePointer<Float>.allocate(capacity: count)
            defer { mask.deallocate() }
            let sparse = SparseConvolution(outChannels: cout, inChannels: cin, kernelSize: kernel, stride: stride, padding: kernel / 2)
            sparse.layout = layout
            for d in list {
                for i in 0..<count { mask[i] = rng.nextDouble() < d ? 1 : 0 }
                sparse.rebuild(mask: mask)
                let packed = UnsafeMutablePointer<Float>.allocate(capacity: max(1, sparse.count))
                defer { packed.deallocate() }
                let forward = medianSeconds(runs: steps) {
                    sparse.forward(weights: w, x: x.data, batch: batch, height: size, width: size, y: out.data,
                                   isa: variant, threads: threads)
                }
                // Each timed pass places dY in its frame (in training one placement serves both).
                let input = medianSeconds(runs: steps) {
                    sparse.outputGradientChanged()
                    sparse.inputGradient(weights: w, dy: dy.data, dx: dx.data, batch: batch, height: size, width: size,
                                         isa: variant, threads: threads)
                }
                let weight = medianSeconds(runs: steps) {
                    sparse.outputGradientChanged()
                    sparse.weightGradient(dy: dy.data, into: .packed(packed), isa: variant, threads: threads)
                }
                rows.append(SparseRow(in_channels: cin, out_channels: cout, size: size, density: d, dense_step_ms: denseStep * 1e3,
                                      forward_ms: forward * 1e3, input_gradient_ms: input * 1e3, weight_gradient_ms: weight * 1e3,
                                      speedup: denseStep / (forward + input + weight)))
            }
        }
        if json {
            for r in rows { print(try jsonLine(r)) }
            return
        }
        print("sparse passes (\(variant)) against the dense forward + backward above (fastest algorithm):")
        var table = TextTable("cin", "cout", "size", "density", "dense ms", "fwd ms", "dX ms", "dW ms", "speedup")
        for r in rows {
            table.add("\(r.in_channels)", "\(r.out_channels)", "\(r.size)", fixed(r.density, 3), fixed(r.dense_step_ms, 2),
                      fixed(r.forward_ms, 2), fixed(r.input_gradient_ms, 2), fixed(r.weight_gradient_ms, 2), fixed(r.speedup, 2) + "x")
        }
        print(table.render())
    }
}
