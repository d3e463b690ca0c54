import ArgumentParser
import Comm
import Foundation
import NN
import Reporting
import Sparsity
import Tensor
import Training

/// `sparsetrain bench scaling`: how far a model's data-parallel training scales. Measures this
/// machine's step with the reduction left out (when each gradient bucket is ready, what follows
/// backward), takes a fabric's α, β (calibrated here under mpirun, or a preset, or given) and γ
/// (calibrated here), and predicts step time, images/s and efficiency on 1…1,024 nodes with the
/// allreduce algorithms OpenMPI 4.1 picks at each size (DESIGN.md §11). Under mpirun it also
/// times the real step on this many ranks and prints the prediction's error.
struct BenchScaling: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "scaling",
        abstract: "Predict step time, images/s and efficiency on 1…1,024 nodes (run under mpirun to calibrate the fabric and check the prediction).")

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Images per rank per step.")
    var batch: Int = 32

    @Option(parsing: .upToNextOption, help: "Mask densities (1 = dense).")
    var densities: [Double] = [1, 0.1, 0.01]

    @Option(help: "Layerwise densities of the ER mask: uniform, erk, er, balanced, pyramidal.")
    var method: String = "erk"

    @Option(help: "Fabric: measured (calibrate α, β on the ranks of this run; needs 2 or more), or a preset: \(Fabric.presets.map(\.name).joined(separator: ", ")).")
    var fabric: String?

    @Option(name: .customLong("alpha-us"), help: "Latency α in µs (with --bandwidth-gbs: a fabric from a cluster's osu_latency / osu_bw).")
    var alphaMicroseconds: Double?

    @Option(name: .customLong("bandwidth-gbs"), help: "Bandwidth 1/β in GB/s.")
    var bandwidthGBs: Double?

    @Option(parsing: .upToNextOption, help: "Node counts to predict.")
    var nodes: [Int] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]

    @Option(help: "Threads per rank (default: cores / ranks on this node).")
    var threads: Int?

    @Option(help: "Communication thread (auto, on, off), as the training config's comm_thread; predictions assume the same on every node.")
    var commThread: CommunicationThreadMode = .auto

    @Option(help: "Timed steps per measurement (medians are used).")
    var steps: Int = 3

    @Option(help: "What-if: predict for nodes this many times faster than this machine (its measured compute, bucket times and σ divided by it).")
    var nodeSpeedup: Double = 1

    @Option(help: "Step-to-step σ of a node as a percentage of its step, instead of the σ measured here (a shared machine's is larger than a cluster node's; 0 leaves stragglers out).")
    var jitterPercent: Double?

    @Option(help: "Untimed steps first.")
    var warmup: Int = 1

    @Option(help: "Write the efficiency plot (SVG) here.")
    var svg: String?

    @Flag(help: "Print one JSON object instead of tables.")
    var json = false

    func validate() throws {
        guard batch > 0, steps > 0, warmup >= 0 else { throw InputError("--batch and --steps must be positive, --warmup not negative") }
        if let p = jitterPercent, !(p >= 0 && p <= 100) { throw InputError("--jitter-percent must be in [0, 100], got \(p)") }
        guard nodeSpeedup >= 1, nodeSpeedup <= 1000 else { throw InputError("--node-speedup must be in [1, 1000], got \(nodeSpeedup)") }
        guard !densities.isEmpty, densities.allSatisfy({ $0 > 0 && $0 <= 1 }) else { throw InputError("--densities must be in (0, 1]") }
        guard !nodes.isEmpty, nodes.allSatisfy({ $0 >= 1 && $0 <= 1 << 20 }) else { throw InputError("--nodes must be between 1 and 1048576") }
        guard ["uniform", "erk", "er", "balanced", "pyramidal"].contains(method) else { throw InputError("--method must be uniform, erk, er, balanced or pyramidal") }
        if let t = threads, t < 1 { throw InputError("--threads must be at least 1") }
        if let f = fabric, f != "measured", Fabric.preset(named: f) == nil {
            throw InputError("--fabric must be measured or one of \(Fabric.presets.map(\.name).joined(separator: ", ")); got '\(f)'")
        }
        guard (alphaMicroseconds == nil) == (bandwidthGBs == nil) else { throw InputError("--alpha-us and --bandwidth-gbs go together") }
        if let a = alphaMicroseconds, let b = bandwidthGBs {
            guard a >= 0, a.isFinite, b > 0, b.isFinite else { throw InputError("--alpha-us must be ≥ 0 and --bandwidth-gbs > 0") }
            guard fabric == nil else { throw InputError("--fabric cannot go with --alpha-us / --bandwidth-gbs") }
        }
    }

    struct Row: Codable {
        var density: Double
        var profile: StepProfile
        var predictions: [StepPrediction]
        /// On the ranks of this run: the step predicted and the one measured.
        var ranks: Int
        var predicted_here_seconds: Double?
        var measured_here_seconds: Double?
        var error_here: Double?
        /// Measured on the ranks of this run: the step's reduction alone (blocking, the same
        /// buckets), and how much of the real step it adds over the step without it.
        var communication_alone_seconds: Double?
        var exposed_measured_seconds: Double?
        var exposed_fraction: Double?
    }

    struct Report: Codable {
        var model: String
        var batch_per_rank: Int
        var threads: Int
        var fabric: Fabric
        var allreduce_samples: [[Double]]
        var rows: [Row]
    }

    func run() throws {
        bootstrapLogging()
        withWorld { comm in
            let threadCount = threads ?? max(1, ProcessInfo.processInfo.activeProcessorCount / ranksOnThisNode())
            BLAS.threads = threadCount
            let gamma = measureReductionSecondsPerByte()
            let (fab, samples) = try chooseFabric(comm, gamma: gamma)
            var rows: [Row] = []
            for density in densities {
                rows.append(try measure(density: density, comm: comm, threads: threadCount, fabric: fab))
            }
            guard comm.rank == 0 else { return }
            let report = Report(model: modelOptions.model.rawValue, batch_per_rank: batch, threads: threadCount, fabric: fab,
                                allreduce_samples: samples.map { [Double($0.bytes), $0.seconds] }, rows: rows)
            if let svg { try writeText(plot(report), to: svg) }
            if json { print(try jsonLine(report)); return }
            printTables(report, ranks: comm.size)
        }
    }

    /// γ: seconds per byte of `a += b` on floats (16 MiB vectors, single-threaded saxpy, median of 5).
    func measureReductionSecondsPerByte() -> Double {
        let n = 1 << 22
        var a = [Float](repeating: 1, count: n)
        let b = [Float](repeating: 0.5, count: n)
        let saved = BLAS.threads
        BLAS.threads = 1
        defer { BLAS.threads = saved }
        let t = medianSeconds(runs: 5) {
            a.withUnsafeMutableBufferPointer { y in b.withUnsafeBufferPointer { x in axpy(n, x: x.baseAddress!, y: y.baseAddress!) } }
        }
        return t / Double(4 * n)
    }

    /// The fabric: calibrated on this run's ranks, a preset, or the one given (γ from here).
    func chooseFabric(_ comm: Communicator, gamma: Double) throws -> (Fabric, [(bytes: Int, seconds: Double)]) {
        if let a = alphaMicroseconds, let b = bandwidthGBs {
            return (Fabric(name: "given", alpha: a * 1e-6, beta: 1 / (b * 1e9), gamma: gamma, source: "--alpha-us \(a) --bandwidth-gbs \(b)"), [])
        }
        if let name = fabric, name != "measured", var preset = Fabric.preset(named: name) {
            preset.gamma = gamma
            return (preset, [])
        }
        guard comm.size > 1 else {
            throw InputError("one rank cannot measure a fabric: run under mpirun with 2 or more ranks, or pass --fabric \(Fabric.presets.map(\.name).joined(separator: "|")) or --alpha-us and --bandwidth-gbs")
        }
        var samples: [(bytes: Int, seconds: Double)] = []
        for count in [2, 256, 4096, 65_536, 1 << 20, 1 << 22] {
            var buffer = [Float](repeating: 1, count: count)
            try comm.barrier()
            let reps = count >= 1 << 20 ? 5 : 50
            var times: [Double] = []
            for _ in 0..<(reps + 2) {
                let t0 = now()
                try comm.allreduce(&buffer, op: .sum, counts: .trusted)
                times.append(now() - t0)
            }
            // Every rank takes the slowest rank's median, so all fit the same fabric.
            var t = [median(Array(times.dropFirst(2)))]
            try comm.allreduce(&t, op: .max, counts: .trusted)
            samples.append((4 * count, t[0]))
        }
        let source = "measured here: blocking MPI_Allreduce on \(comm.size) ranks, \(samples.count) sizes 8 B – 16 MiB"
        guard let fitted = fitFabric(samples, ranks: comm.size, gamma: gamma, name: "measured", source: source) else {
            throw InputError("the allreduce timings do not determine α and β")
        }
        return (fitted, samples)
    }

    /// Profile of the step at `density` (reduction left out, all ranks at once), predictions,
    /// and on 2 or more ranks the real step.
    func measure(density: Double, comm: Communicator, threads: Int, fabric: Fabric) throws -> Row {
        let net = try modelOptions.build()
        net.setThreads(threads)
        var rng = Xoshiro256(seed: 7 &+ UInt64(comm.rank))
        let images = (0..<(batch * net.imageSize)).map { _ in rng.nextFloat() * 2 - 1 }
        let labels = (0..<batch).map { _ in Int32(rng.nextIndex(below: net.classes)) }
        try drawBenchMask(net, density: density, method: method)
        let masks = MaskState(store: net.store)
        // Kernel choices made once, from timing, on the local step; the world step reuses them.
        net.ctx.sparseKernels = .auto
        let local = try TrainingStep(network: net, masks: masks, communicator: LocalCommunicator(), loss: SoftmaxCrossEntropy(), sgd: SGD(), threads: threads)
        // The world step decides (collectively) whether it has a communication thread; with one
        // rank, decide as it would.
        let world = comm.size > 1
            ? try TrainingStep(network: net, masks: masks, communicator: comm, loss: SoftmaxCrossEntropy(), sgd: SGD(), threads: threads,
                               communicationThread: commThread) : nil
        let thread = world.map { $0.reducer.overlap == .thread }
            ?? (commThread == .on || (commThread == .auto && nodeHasSpareCore(threadsPerRank: threads)))
        // Interleaved, so that all three sample the same state of a shared machine: the step
        // without reduction (all ranks at once, each on its own), the real step, the reduction alone.
        var totals: [Double] = [], backward: [Double] = [], ready: [[Double]] = []
        var worldTimes: [Double] = [], alone: [Double] = []
        for k in 0..<(warmup + steps) {
            let timed = k >= warmup
            try comm.barrier()
            var t0 = now()
            try oneStep(local, images: images, labels: labels, normalizer: batch)
            if timed {
                totals.append(now() - t0)
                backward.append(local.reducer.lastStep.finishCalled)
                ready.append(local.reducer.lastStep.bucketReady)
            }
            guard let world, nodeSpeedup == 1 else { continue }  // (a what-if has no real step to compare with)
            try comm.barrier()
            t0 = now()
            try oneStep(world, images: images, labels: labels, normalizer: batch * comm.size)
            if timed { worldTimes.append(now() - t0) }
            try comm.barrier()
            t0 = now()
            try world.reducer.reduce(gradients: net.store.gradients)
            if timed { alone.append(now() - t0) }
        }
        let total = median(totals), back = median(backward)
        // σ of the step, robustly: 1.4826 × the median absolute deviation (the step times of a
        // shared host have rare long outliers that a standard deviation of a few steps inflates).
        let jitter = jitterPercent.map { $0 / 100 * total } ?? 1.4826 * median(totals.map { abs($0 - total) })
        let buckets = local.reducer.buckets.enumerated().map { b, bucket in
            StepProfile.Bucket(ready: median(ready.map { $0[b] }) / nodeSpeedup, bytes: bucket.elementCount * MemoryLayout<Float>.stride)
        }
        // The slowest rank's numbers (ranks share this machine's cores and memory).
        var worst = [back, total - back, jitter].map { $0 / nodeSpeedup }
        try comm.allreduce(&worst, op: .max, counts: .trusted)
        let profile = StepProfile(backwardSeconds: worst[0], tailSeconds: worst[1], buckets: buckets, batch: batch, jitterSeconds: worst[2])
        let predictions = nodes.map { predictStep(profile, ranks: $0, fabric: fabric, schedule: .engine(ranks: $0, thread: thread)) }
        var row = Row(density: masks.globalDensity, profile: profile, predictions: predictions, ranks: comm.size)
        if world != nil, nodeSpeedup == 1 {
            // Per step, the slowest rank's step without reduction and its real step: what the
            // reduction adds beyond waiting for the slowest rank is the exposed communication.
            var slowest = totals + worldTimes
            try comm.allreduce(&slowest, op: .max, counts: .trusted)
            let added = (0..<totals.count).map { slowest[totals.count + $0] - slowest[$0] }
            var measured = [median(worldTimes), median(alone), median(added)]
            try comm.allreduce(&measured, op: .max, counts: .trusted)
            let predicted = predictStep(profile, ranks: comm.size, fabric: fabric, schedule: .engine(ranks: comm.size, thread: thread)).stepSeconds
            row.predicted_here_seconds = predicted
            row.measured_here_seconds = measured[0]
            row.error_here = predicted / measured[0] - 1
            // The reduction by itself, and the part of it the real step does not hide.
            row.communication_alone_seconds = measured[1]
            row.exposed_measured_seconds = max(0, measured[2])
            row.exposed_fraction = max(0, measured[2]) / max(measured[1], 1e-12)
        }
        return row
    }

    /// One step of `step` on this rank's batch.
    func oneStep(_ step: TrainingStep, images: [Float], labels: [Int32], normalizer: Int) throws {
        try images.withUnsafeBufferPointer { x in
            try labels.withUnsafeBufferPointer { y in
                _ = try step.run(images: x.baseAddress!, labels: y.baseAddress!, batch: batch, normalizer: Float(normalizer), learningRate: 0.001)
            }
        }
    }

    func printTables(_ report: Report, ranks: Int) {
        let f = report.fabric
        print("bench scaling: \(report.model), \(report.batch_per_rank) images per rank per step, \(report.threads) thread(s) per rank, OpenBLAS kernel \(BLAS.coreName)"
            + (nodeSpeedup == 1 ? "" : "; what-if: nodes \(fixed(nodeSpeedup, 1))× faster than this machine (compute and σ divided by it)"))
        print("fabric \(f.name): α \(fixed(f.alpha * 1e6, 2)) µs, 1/β \(fixed(f.gigabytesPerSecond, 2)) GB/s, γ \(fixed(f.gamma * 1e12, 1)) ps/byte (\(f.source))")
        for row in report.rows {
            let p = row.profile
            print("")
            print("density \(fixed(row.density, 4)): compute \(fixed(p.computeSeconds * 1e3, 1)) ms per step (backward ends at \(fixed(p.backwardSeconds * 1e3, 1)) ms), "
                + "\(p.buckets.count) buckets, \(fixed(Double(p.bytesPerStep) / 1e6, 2)) MB reduced per step, step jitter σ \(fixed(p.jitterSeconds * 1e3, 1)) ms"
                + (jitterPercent.map { " (given: \(fixed($0, 1))% of the step)" } ?? ""))
            var table = TextTable("nodes", "reduction", "largest bucket", "comm ms", "exposed ms", "straggler ms", "step ms", "images/s", "efficiency")
            for q in row.predictions {
                table.add("\(q.ranks)", q.ranks > 1 ? q.schedule.rawValue : "-", q.algorithm?.rawValue ?? "-", fixed(q.communicationSeconds * 1e3, 1),
                          fixed(q.exposedSeconds * 1e3, 1), fixed(q.stragglerSeconds * 1e3, 1), fixed(q.stepSeconds * 1e3, 1),
                          fixed(q.imagesPerSecond, 1), fixed(q.efficiency, 3))
            }
            print(table.render())
            if let predicted = row.predicted_here_seconds, let measured = row.measured_here_seconds, let e = row.error_here {
                print("on the \(ranks) ranks of this run: predicted \(fixed(predicted * 1e3, 1)) ms per step, measured \(fixed(measured * 1e3, 1)) ms (error \(fixed(100 * e, 1))%)")
            }
            if let alone = row.communication_alone_seconds, let exposed = row.exposed_measured_seconds, let f = row.exposed_fraction {
                print("communication measured here: the reduction alone \(fixed(alone * 1e3, 1)) ms; the real step exceeds the slowest rank's step without it by "
                    + "\(fixed(exposed * 1e3, 1)) ms (exposed: \(fixed(100 * f, 0))% of the communication)")
            }
        }
        print("")
        print("Model: step = backward + exposed communication + tail + σ·E[max of N standard normals] (σ: 1.4826 × median absolute deviation of this rank's steps); as the engine reduces: on a communication thread "
            + "(blocking allreduces, overlapped with backward) when it has one, else blocking after backward below 4 ranks and "
            + "non-blocking ones into a staging buffer (libnbc: Rabenseifner or ring from 64 KiB) overlapped from 4. Limits: one rank per node, "
            + "a flat network without congestion, calls that progress during backward, compute measured on this machine.")
    }

    /// Efficiency against nodes (log axis), one line per density.
    func plot(_ report: Report) -> String {
        seriesChartSVG(title: "\(report.model): predicted efficiency on \(report.fabric.name)",
                       series: report.rows.map { row in ("density \(String(format: "%g", (row.density * 1e4).rounded() / 1e4))", row.predictions.map { (Double($0.ranks), $0.efficiency) }) },
                       xLabel: "nodes", yLabel: "efficiency (step on 1 / step on N)", logX: true, xTick: { String(format: "%g", $0) })
    }
}
