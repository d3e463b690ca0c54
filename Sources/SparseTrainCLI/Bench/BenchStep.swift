import ArgumentParser
import Comm
import Foundation
import NN
import Sparsity
import Tensor
import Training

/// `sparsetrain bench step`: one training step of a model on random data — the `TrainingStep`
/// that `train` runs (forward, loss, backward, packed gradient reduction on a single-process
/// communicator, SGD) — optionally on a random ER mask, with a per-layer-type breakdown and the
/// sgemm rate of this machine.
struct BenchStep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "step", abstract: "Time one training step of a model (single process).")

    @OptionGroup var modelOptions: ModelOptions
    var model: ModelName { modelOptions.model }

    @Option(help: "Images per step.")
    var batch: Int = 128

    @Option(help: "Sparsity of a random ER mask (0 = dense).")
    var sparsity: Double = 0

    @Option(help: "Layerwise densities of the mask: uniform, erk, er, balanced, pyramidal.")
    var method: String = "erk"

    @Option(help: "Threads (OpenBLAS and parallel loops). Default: all cores.")
    var threads: Int?

    @Option(help: "Timed steps (the median is reported).")
    var steps: Int = 10

    @Option(help: "Untimed steps first.")
    var warmup: Int = 2

    @Option(name: .customLong("column-mib"), help: "Largest im2col scratch per convolution, in MiB (images are processed in chunks that fit).")
    var columnMiB: Double?
    @Option(name: .customLong("transform-mib"), help: "Largest Winograd scratch per worker, in MiB (transformed input and products of a chunk of images; default 32).")
    var transformMiB: Double?

    @Option(help: "Convolution kernels: automatic (3×3: Winograd F(4×4) from 64 channels, direct kernels below), gemm (im2col + sgemm everywhere), direct, winograd (F(2×2) wherever it applies) or winograd4 (F(4×4)).")
    var conv: ConvolutionAlgorithm = .automatic

    @Option(help: "Sparse kernels in masked linear and convolution layers: auto (per layer and pass, the faster as timed), on, off.")
    var sparseKernels: SparseKernelMode = .auto

    @Option(help: ArgumentHelp(
        "Python with torch installed: also time PyTorch (dense) on the same step in this run (resnet20, vgg16, mlp, resnet50-imagenet).",
        valueName: "python"))
    var pytorch: String?

    @Flag(help: "Also time this engine on the same model dense (sparsity 0, a separate process) in this run; the ratio reported is this step's speed over the dense step's.")
    var againstDense = false

    @Option(help: "With --pytorch or --against-dense: rounds of (this engine's timed steps, then the reference's), so both see the same phases of a noisy machine; each ratio reported is the median of the rounds' ratios.")
    var rounds: Int = 1

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func validate() throws {
        guard batch > 0 else { throw InputError("--batch must be positive") }
        guard steps > 0, warmup >= 0 else { throw InputError("--steps must be positive, --warmup not negative") }
        guard rounds >= 1 else { throw InputError("--rounds must be at least 1") }
        if rounds > 1 && pytorch == nil && !againstDense {
            throw InputError("--rounds needs --pytorch or --against-dense (it interleaves the step with the reference)")
        }
        if againstDense && sparsity == 0 { throw InputError("--against-dense compares a sparse step with the dense one: give --sparsity") }
        if let t = threads, t < 1 { throw InputError("--threads must be at least 1") }
        for (name, mib) in [("--column-mib", columnMiB), ("--transform-mib", transformMiB)] {
            if let mib, !(mib > 0 && mib.isFinite) { throw InputError("\(name) must be a positive number of MiB, got \(mib)") }
        }
        guard sparsity >= 0 && sparsity < 1 else { throw InputError("--sparsity must be in [0, 1), got \(sparsity)") }
        let rules = ["uniform", "erk", "er", "balanced", "pyramidal"]
        guard rules.contains(method) else { throw InputError("--method must be one of \(rules.joined(separator: ", ")), got '\(method)'") }
    }

    struct Report: Codable {
        var model: String
        var batch: Int
        var threads: Int
        var convolution: String
        var parameters: Int
        var density: Double
        var images_per_second: Double
        var seconds_per_step: Double
        var gflops_effective: Double
        var sgemm_gflops: Double
        var forward_gflop_per_image: Double
        var breakdown_seconds: [String: Double]
        /// Peak resident memory over the timed steps (nil when this kernel cannot reset the peak).
        var peak_rss_mib: Double?
        /// Peak resident memory up to the first timed step (model built, masked, warm-up steps).
        var setup_peak_rss_mib: Double?
        var sparse_kernels: String
        var sparse_isa: String
        /// Forward GEMM FLOPs left at this mask over the dense model's.
        var masked_flop_fraction: Double
        var layers: [LayerRow]
        var blas_core: String
        var reference_pytorch_images_per_second: String?
        var pytorch_images_per_second: Double?
        var speedup_vs_pytorch: Double?
        /// Per round: this engine's images/s over PyTorch's (`--rounds`).
        var round_speedups: [Double]?
        /// `--against-dense`: this engine dense on the same model, per round, and this step's
        /// speed over it (median of the rounds).
        var dense_images_per_second: [Double]?
        var speedup_vs_dense: Double?
    }

    struct LayerRow: Codable {
        var name: String, density: Double
        var forward: String, input_gradient: String, weight_gradient: String
        /// What the layer's dense passes run ("Winograd", "direct", "im2col + GEMM", "GEMM", …).
        var dense_algorithm: String
        var ms: Double
        /// Per pass, both paths as timed when the layer chose between them (`auto`; nil: not timed).
        var forward_timed: TimedPass?, input_gradient_timed: TimedPass?, weight_gradient_timed: TimedPass?
    }

    struct TimedPass: Codable {
        var sparse_ms: Double, dense_ms: Double
        init?(_ t: PassTiming?) {
            guard let t else { return nil }
            (sparse_ms, dense_ms) = (t.sparse * 1e3, t.dense * 1e3)
        }
        /// "path (sparse ms | dense ms)", or the path alone when the pass was not timed.
        static func cell(_ path: String, _ t: TimedPass?) -> String {
            guard let t else { return path }
            return "\(path) (\(fixed(t.sparse_ms, 1)) | \(fixed(t.dense_ms, 1)))"
        }
    }

    func run() throws {
        let threadCount = threads ?? ProcessInfo.processInfo.activeProcessorCount
        BLAS.threads = threadCount
        let net = try modelOptions.build()
        net.setThreads(threadCount)
        if let mib = columnMiB { net.ctx.columnBudget = max(1, Int(mib * 262_144)) }
        if let mib = transformMiB { net.ctx.transformBudget = max(1, Int(mib * 262_144)) }
        net.ctx.convolutionAlgorithm = conv
        var rng = Xoshiro256(seed: 7)
        let images = (0..<(batch * net.imageSize)).map { _ in rng.nextFloat() * 2 - 1 }
        let labels = (0..<batch).map { _ in Int32(rng.nextIndex(below: net.classes)) }
        try drawBenchMask(net, density: 1 - sparsity, method: method)
        let masks = MaskState(store: net.store)
        net.ctx.sparseKernels = sparseKernels
        let trainingStep = try TrainingStep(network: net, masks: masks, communicator: LocalCommunicator(),
                                            loss: SoftmaxCrossEntropy(), sgd: SGD(), threads: threadCount)
        func step() throws {
            try images.withUnsafeBufferPointer { x in
                try labels.withUnsafeBufferPointer { y in
                    _ = try trainingStep.run(images: x.baseAddress!, labels: y.baseAddress!, batch: batch,
                                         normalizer: Float(batch), learningRate: 0.01)
                }
            }
        }
        for _ in 0..<warmup { try step() }
        // Setup (building, initialising and masking the model, the first step's timing of dense
        // against sparse passes) has its own peak; the steps' peak is measured from here.
        let setupPeakRSS = peakResidentMiB()
        let peakResetWorked = resetPeakResident()
        net.ctx.profiling = true
        net.ctx.resetTimes()
        let layerSecondsBefore = net.body.kernelReports.map(\.seconds)
        // Rounds of (timed steps, PyTorch): the ratio of each round compares the two engines in
        // the same minutes of this machine.
        var times: [Double] = [], roundSeconds: [Double] = [], torchRates: [Double] = [], denseRates: [Double] = []
        var peakRSS = Double.nan
        for round in 0..<rounds {
            var roundTimes: [Double] = []
            for _ in 0..<steps {
                let t0 = now()
                try step()
                roundTimes.append(now() - t0)
            }
            times += roundTimes
            roundSeconds.append(median(roundTimes))
            // The steps' high-water mark, before the sgemm and PyTorch measurements below.
            if round == 0 { peakRSS = peakResidentMiB() }
            if let python = pytorch { torchRates.append(try runPyTorch(python, threads: threadCount)) }
            if againstDense { denseRates.append(try runDense(threads: threadCount)) }
        }
        let timedSteps = Double(times.count)
        let seconds = median(times)
        let flops = net.forwardFlops(batch: batch)
        var breakdown = net.ctx.times.reduce(into: [String: Double]()) { $0[$1.key.rawValue] = $1.value / timedSteps }
        breakdown["reduce, sgd, other"] = max(0, times.reduce(0, +) / timedSteps - breakdown.values.reduce(0, +))
        let sgemm = measureSgemm(threads: threadCount)
        let roundSpeedups = zip(roundSeconds, torchRates).map { Double(batch) / $0 / $1 }
        let denseSpeedups = zip(roundSeconds, denseRates).map { Double(batch) / $0 / $1 }
        let torch = torchRates.isEmpty ? nil : median(torchRates)
        let reference: [ModelName: String] = [
            .resnet20: threadCount >= 2 ? "720-814" : "430", .vgg16: threadCount >= 2 ? "149-156" : "84",
        ]
        let layerRows = zip(net.body.kernelReports, layerSecondsBefore).map { r, before in
            LayerRow(name: r.name, density: r.density, forward: r.forward?.rawValue ?? "-",
                     input_gradient: r.inputGradient?.rawValue ?? "-", weight_gradient: r.weightGradient?.rawValue ?? "-",
                     dense_algorithm: r.denseAlgorithm ?? "GEMM", ms: (r.seconds - before) / timedSteps * 1e3,
                     forward_timed: TimedPass(r.timed[0]), input_gradient_timed: TimedPass(r.timed[1]),
                     weight_gradient_timed: TimedPass(r.timed[2]))
        }
        let report = Report(
            model: model.rawValue, batch: batch, threads: threadCount, convolution: conv.rawValue, parameters: net.store.count,
            density: masks.globalDensity,
            images_per_second: Double(batch) / seconds, seconds_per_step: seconds,
            gflops_effective: 3 * flops / seconds / 1e9, sgemm_gflops: sgemm,
            forward_gflop_per_image: flops / Double(batch) / 1e9, breakdown_seconds: breakdown,
            peak_rss_mib: peakRSS.isFinite && peakResetWorked ? peakRSS : nil,
            setup_peak_rss_mib: setupPeakRSS.isFinite ? setupPeakRSS : nil, sparse_kernels: sparseKernels.rawValue,
            sparse_isa: net.ctx.kernelISA.description, masked_flop_fraction: net.maskedFlopFraction, layers: layerRows,
            blas_core: BLAS.coreName,
            reference_pytorch_images_per_second: reference[model],
            pytorch_images_per_second: torch, speedup_vs_pytorch: roundSpeedups.isEmpty ? nil : median(roundSpeedups),
            round_speedups: rounds > 1 && !roundSpeedups.isEmpty ? roundSpeedups : nil,
            dense_images_per_second: denseRates.isEmpty ? nil : denseRates,
            speedup_vs_dense: denseSpeedups.isEmpty ? nil : median(denseSpeedups))
        if json {
            print(try jsonLine(report))
            return
        }
        print("bench step: \(model.rawValue), batch \(batch), \(threadCount) thread(s), "
            + "\(report.parameters) parameters, density \(fixed(report.density, 4)), convolution \(conv.rawValue), OpenBLAS kernel \(report.blas_core), median of \(times.count) steps")
        var table = TextTable("images/s", "ms/step", "GFLOP/s (3x fwd)", "sgemm GFLOP/s", "of sgemm", "peak RSS MiB: steps",
                              "setup")
        table.add(fixed(report.images_per_second, 1), fixed(seconds * 1e3, 1), fixed(report.gflops_effective, 1),
                  fixed(sgemm, 1), fixed(100 * report.gflops_effective / sgemm, 0) + "%", report.peak_rss_mib.map { fixed($0, 0) } ?? "n/a",
                  report.setup_peak_rss_mib.map { fixed($0, 0) } ?? "n/a")
        print(table.render())
        var parts = TextTable("part", "ms/step", "share")
        let total = breakdown.values.reduce(0, +)
        for (k, v) in breakdown.sorted(by: { $0.value > $1.value }) {
            parts.add(k, fixed(v * 1e3, 2), fixed(100 * v / total, 1) + "%")
        }
        print(parts.render())
        print("FLOP ideal at this mask: the masked layers keep \(fixed(100 * report.masked_flop_fraction, 2))% of the dense "
            + "forward FLOPs (ideal speed-up of that work \(fixed(1 / max(report.masked_flop_fraction, 1e-9), 1))x)")
        if !layerRows.isEmpty {
            print("masked layers (sparse kernels \(sparseKernels.rawValue), \(report.sparse_isa)):")
            var layers = TextTable("layer", "density", "forward", "input grad", "weight grad", "dense passes run", "ms/step")
            for r in layerRows {
                layers.add(r.name, fixed(r.density, 4), TimedPass.cell(r.forward, r.forward_timed),
                           TimedPass.cell(r.input_gradient, r.input_gradient_timed),
                           TimedPass.cell(r.weight_gradient, r.weight_gradient_timed), r.dense_algorithm, fixed(r.ms, 2))
            }
            print(layers.render())
            if layerRows.contains(where: { $0.forward_timed ?? $0.input_gradient_timed ?? $0.weight_gradient_timed != nil }) {
                print("(sparse ms | dense ms): the pass timed both ways when the layer chose its path (the faster of two runs "
                    + "each, in the first step); sparse is taken when at least "
                    + "\(fixed(100 * (1 - PassTiming.sparseBelowDenseFraction), 0))% faster")
            }
        }
        if let ratio = report.speedup_vs_dense {
            print("this engine dense (sparsity 0, same model and options) in this run, \(rounds) round(s) interleaved with the "
                + "steps above: " + denseRates.map { fixed($0, 1) }.joined(separator: ", ") + " images/s; this step is "
                + denseSpeedups.map { fixed($0, 2) + "x" }.joined(separator: ", ") + " (median \(fixed(ratio, 2))x)")
        }
        if let t = torch, let ratio = report.speedup_vs_pytorch {
            if rounds > 1 {
                print("PyTorch in this run (launch/reference/pytorch_step.py), \(rounds) rounds interleaved with the steps above: "
                    + torchRates.map { fixed($0, 1) }.joined(separator: ", ") + " images/s; sparsetrain is "
                    + roundSpeedups.map { fixed($0, 2) + "x" }.joined(separator: ", ") + " (median \(fixed(ratio, 2))x)")
            } else {
                print("PyTorch in this run (launch/reference/pytorch_step.py): \(fixed(t, 1)) images/s; "
                    + "sparsetrain is \(fixed(ratio, 2))x")
            }
        } else if let r = report.reference_pytorch_images_per_second {
            print("PyTorch 2.13 CPU on the AVX-512 machines of DESIGN.md §6, same batch and threads: \(r) images/s "
                + "(pass --pytorch PYTHON to time it on this machine)")
        }
    }

    /// Runs the PyTorch reference step with `python`; returns its images per second.
    private func runPyTorch(_ python: String, threads: Int) throws -> Double {
        guard [.resnet20, .vgg16, .mlp, .resnet50ImageNet].contains(model) else {
            throw InputError("--pytorch supports resnet20, vgg16, mlp and resnet50-imagenet")
        }
        if model == .resnet50ImageNet, modelOptions.input != nil || modelOptions.classes != nil {
            throw InputError("--pytorch times resnet50-imagenet at 3x224x224 with 1000 classes only")
        }
        if model == .mlp, modelOptions.input != nil || modelOptions.classes != nil {
            throw InputError("--pytorch times the MLP on 3x32x32 inputs with 10 classes only")
        }
        // The script lives in the repository: look in the working directory, then above the binary.
        let relative = "launch/reference/pytorch_step.py"
        var candidates = [FileManager.default.currentDirectoryPath]
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        while dir.path != "/" { candidates.append(dir.path); dir = dir.deletingLastPathComponent() }
        guard let root = candidates.first(where: {
            FileManager.default.fileExists(atPath: $0 + "/" + relative)
        }) else {
            throw InputError("cannot find \(relative): run from the repository")
        }
        let script = root + "/" + relative
        let arguments = [script, "--model", model.rawValue, "--batch", "\(batch)",
                         "--threads", "\(threads)", "--steps", "\(steps)", "--warmup", "\(warmup)"]
            + (model == .mlp ? ["--hidden"] + modelOptions.hidden.map(String.init) : [])
        guard let rate = imagesPerSecond(running: python, arguments) else {
            throw InputError("the PyTorch reference run failed (\(python))")
        }
        return rate
    }

    /// Runs this binary's `bench step` on the same model and options at sparsity 0; returns its
    /// images per second.
    private func runDense(threads: Int) throws -> Double {
        var arguments = ["bench", "step", "--model", model.rawValue, "--batch", "\(batch)", "--threads", "\(threads)",
                         "--steps", "\(steps)", "--warmup", "\(warmup)", "--conv", conv.rawValue, "--json"]
        if let c = modelOptions.classes { arguments += ["--classes", "\(c)"] }
        if let i = modelOptions.input { arguments += ["--input", i] }
        if model == .mlp { arguments += ["--hidden"] + modelOptions.hidden.map(String.init) }
        if let mib = columnMiB { arguments += ["--column-mib", "\(mib)"] }
        if let mib = transformMiB { arguments += ["--transform-mib", "\(mib)"] }
        let binary = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().path
        guard let rate = imagesPerSecond(running: binary, arguments) else {
            throw InputError("the dense reference run failed (\(binary) \(arguments.joined(separator: " ")))")
        }
        return rate
    }

    /// Runs `executable` with `arguments`; the `images_per_second` of the JSON object it prints, or
    /// nil when it fails or prints none.
    private func imagesPerSecond(running executable: String, _ arguments: [String]) -> Double? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0,
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return object["images_per_second"] as? Double
    }

    /// sgemm rate with `threads` OpenBLAS threads on a convolution-shaped product
    /// (64 × 32768 × 576), best of 5.
    private func measureSgemm(threads: Int) -> Double {
        let saved = BLAS.threads
        BLAS.threads = threads
        defer { BLAS.threads = saved }
        let m = 64, n = 32768, k = 576
        let a = [Float](repeating: 0.5, count: m * k), b = [Float](repeating: 0.25, count: k * n)
        var c = [Float](repeating: 0, count: m * n)
        var best = Double.infinity
        for _ in 0..<5 {
            let t0 = now()
            c.withUnsafeMutableBufferPointer {
                gemm(.none, .none, m: m, n: n, k: k, a: a, lda: k, b: b, ldb: n, c: $0.baseAddress!, ldc: n)
            }
            best = min(best, now() - t0)
        }
        return 2 * Double(m * n * k) / best / 1e9
    }
}


/// Resets this process's peak resident set size (VmHWM) to its current size (Linux ≥ 4.0:
/// "5" written to /proc/self/clear_refs); false when that is not possible.
func resetPeakResident() -> Bool {
    guard let f = fopen("/proc/self/clear_refs", "w") else { return false }
    defer { fclose(f) }
    return fputs("5", f) >= 0 && fflush(f) == 0
}

/// Peak resident set size of this process (VmHWM), in MiB.
func peakResidentMiB() -> Double {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
          let kb = Double(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "")
    else { return .nan }
    return kb / 1024
}
