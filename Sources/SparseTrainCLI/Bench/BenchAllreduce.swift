import ArgumentParser
import Comm
import Foundation
import Tensor

/// `sparsetrain bench allreduce`: the packed masked gradient reduction against a plain MPI
/// allreduce of the same number of bytes, and against the dense allreduce it replaces — both
/// gathered from a dense gradient and born packed (the gradient already in the reducer's
/// packed slots, as sparse layers write it: no gather, no scatter).
struct BenchAllreduce: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "allreduce",
        abstract: "Time the packed masked gradient allreduce (run under mpirun).")

    @Option(help: "Parameters in the flat gradient buffer (default: ResNet-50's 25,557,032).")
    var params: Int = 25_557_032

    @Option(parsing: .upToNextOption, help: "Mask densities to measure, in (0, 1].")
    var density: [Double] = [1.0, 0.1, 0.01]

    @Option(help: "Equal masked segments the buffer is split into (ResNet-50 has 54 masked layers).")
    var segments: Int = 54

    @Option(help: "Timed repetitions per measurement (the median is reported).")
    var repeats: Int = 20

    @Option(help: "Untimed repetitions before timing.")
    var warmup: Int = 3

    @Option(name: .customLong("bucket-mib"), help: "Packed bucket size in MiB.")
    var bucketMiB: Double = 4

    @Option(help: "What the reducer leaves in the gradient: sum or average over ranks.")
    var result: ReducerResult = .sum

    @Option(help: "Seed of the random mask (the same on every rank).")
    var seed: UInt64 = 1

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    @Flag(help: "Instead: the link between rank 0 and the last rank (ping-pong latency and bandwidth) against a blocking allreduce of the same size, 8 B – 64 MiB.")
    var link = false

    enum ReducerResult: String, ExpressibleByArgument, CaseIterable {
        case sum, average
    }

    func validate() throws {
        guard params > 0 else { throw InputError("--params must be positive") }
        guard segments > 0, segments <= params else {
            throw InputError("--segments must be between 1 and --params")
        }
        guard repeats > 0, warmup >= 0 else {
            throw InputError("--repeats must be positive and --warmup not negative")
        }
        guard bucketMiB > 0 else { throw InputError("--bucket-mib must be positive") }
        for d in density where !(d > 0 && d <= 1) {
            throw InputError("--density \(d) is outside (0, 1]")
        }
    }

    struct Row: Codable {
        var density: Double
        var packed_bytes: Int
        var dense_bytes: Int
        var buckets: Int
        var seconds_packed: Double
        var seconds_gather: Double
        var seconds_communicate: Double
        var seconds_scatter: Double
        var seconds_raw: Double
        var seconds_dense: Double
        var efficiency: Double
        var speedup_vs_dense: Double
        var seconds_born_packed: Double
        var efficiency_born_packed: Double
    }

    struct Report: Codable {
        var benchmark = "allreduce"
        var ranks: Int
        var params: Int
        var segments: Int
        var result: String
        var repeats: Int
        var results: [Row]
    }

    struct LinkRow: Codable {
        var bytes: Int
        var pingpong_seconds: Double
        var pingpong_gbs: Double
        var allreduce_seconds: Double
        /// Allreduce bus bandwidth: bytes / seconds · 2(N−1)/N (the bytes each rank moves).
        var allreduce_bus_gbs: Double
        /// Allreduce seconds over one-way ping-pong seconds.
        var latency_ratio: Double
        /// Allreduce bus bandwidth over ping-pong bandwidth.
        var bandwidth_ratio: Double
        /// Both ranks sending `bytes` to each other at once: seconds, and bytes per second each way.
        var exchange_seconds: Double
        var exchange_gbs: Double
        /// Allreduce bus bandwidth over the exchange's bandwidth each way.
        var bandwidth_ratio_exchange: Double
    }

    func run() throws {
        if link { runLink() }
        withWorld { comm in
            let layout = (0..<segments).map { i in
                let lo = params * i / segments, hi = params * (i + 1) / segments
                return BufferSegment(name: "segment\(i)", offset: lo, count: hi - lo, masked: true)
            }
            let grad = UnsafeMutableBufferPointer<Float>.allocate(capacity: params)
            let mask = UnsafeMutableBufferPointer<Float>.allocate(capacity: params)
            defer { grad.deallocate(); mask.deallocate() }
            var rng = Xoshiro256(seed: seed &+ UInt64(comm.rank) &* 0x9E37_79B9)
            for i in 0..<params { grad[i] = rng.nextFloat() - 0.5 }

            if comm.rank == 0 && !json {
                print("allreduce benchmark: \(comm.size) rank(s), \(params) parameters in "
                    + "\(segments) masked segments, result \(result.rawValue), median of \(repeats)")
                if comm.size == 1 { print("note: one rank — run under mpirun -np 2 or more to measure transfer") }
                fflushStdout()
            }

            // The dense allreduce the packed one replaces.
            let denseSeconds = try timeCollective(comm) {
                try comm.allreduce(grad, op: .sum, counts: .trusted)
            }
            var rows: [Row] = []
            for d in density {
                var maskRng = Xoshiro256(seed: seed)
                for i in 0..<params { mask[i] = maskRng.nextDouble() < d ? 1 : 0 }
                try MaskSync.verifyAgreement(
                    UnsafeBufferPointer(mask), segments: layout, what: "mask", maskedOnly: true,
                    communicator: comm)
                let reducer = try GradientReducer(
                    segments: layout, mask: UnsafeBufferPointer(mask), communicator: comm,
                    result: result == .sum ? .sum : .average,
                    bucketCapBytes: Int(bucketMiB * 1_048_576))
                let packedSeconds = try timeCollective(comm) { try reducer.reduce(gradients: grad) }
                let calls = Double(warmup + repeats)
                let phase = reducer.timings
                // As the training step sets it up for this many ranks.
                reducer.overlapsBackward = comm.size >= 4
                let bornPackedSeconds = try timeCollective(comm) {
                    reducer.beginStep(gradients: grad)
                    for i in layout.indices.reversed() {
                        try reducer.segmentReady(i, bornPacked: reducer.packedSlot(segment: i) != nil)
                    }
                    try reducer.finishStep()
                }
                let raw = UnsafeMutableBufferPointer(rebasing: grad[0..<reducer.elementsPerStep])
                let rawSeconds = try timeCollective(comm) {
                    try comm.allreduce(raw, op: .sum, counts: .trusted)
                }
                let row = Row(
                    density: d, packed_bytes: reducer.bytesPerStep, dense_bytes: 4 * params,
                    buckets: reducer.buckets.count, seconds_packed: packedSeconds,
                    seconds_gather: phase.gather / calls,
                    seconds_communicate: phase.communicate / calls,
                    seconds_scatter: phase.scatter / calls,
                    seconds_raw: rawSeconds, seconds_dense: denseSeconds,
                    efficiency: rawSeconds / packedSeconds,
                    speedup_vs_dense: denseSeconds / packedSeconds,
                    seconds_born_packed: bornPackedSeconds, efficiency_born_packed: rawSeconds / bornPackedSeconds)
                rows.append(row)
            }
            guard comm.rank == 0 else { return }
            if json {
                print(try jsonLine(Report(
                    ranks: comm.size, params: params, segments: segments,
                    result: result.rawValue, repeats: repeats, results: rows)))
            } else {
                var table = TextTable(
                    "density", "packed MB", "dense MB", "buckets", "packed ms", "gather",
                    "comm", "scatter", "raw ms", "efficiency", "dense ms", "vs dense", "born packed ms", "efficiency")
                for r in rows {
                    table.add(
                        fixed(r.density, 3), fixed(Double(r.packed_bytes) / 1e6, 2),
                        fixed(Double(r.dense_bytes) / 1e6, 2), "\(r.buckets)",
                        fixed(r.seconds_packed * 1e3, 3), fixed(r.seconds_gather * 1e3, 3),
                        fixed(r.seconds_communicate * 1e3, 3), fixed(r.seconds_scatter * 1e3, 3),
                        fixed(r.seconds_raw * 1e3, 3),
                        fixed(r.efficiency, 2), fixed(r.seconds_dense * 1e3, 3),
                        fixed(r.speedup_vs_dense, 2) + "x", fixed(r.seconds_born_packed * 1e3, 3),
                        fixed(r.efficiency_born_packed, 2))
                }
                print(table.render())
                print("gather/comm/scatter: mean ms per step on rank 0; efficiency = raw / packed "
                    + "(raw: plain MPI_Allreduce of the packed byte count); "
                    + "vs dense = full-buffer allreduce / packed; born packed: the gradient already in the "
                    + "packed slots (sparse layers), efficiency = raw / born packed")
            }
        }
    }

    /// Ping-pong between rank 0 and the last rank against a blocking allreduce of the same bytes
    /// on all ranks: the latency of small messages and the bandwidth of large ones.
    func runLink() -> Never {
        withWorld { comm in
            guard let mpi = comm as? MPICommunicator, comm.size >= 2 else {
                throw InputError("--link needs 2 or more ranks under mpirun")
            }
            var rows: [LinkRow] = []
            for bytes in [8, 1024, 16_384, 262_144, 1 << 20, 1 << 22, 1 << 24, 1 << 26] {
                let reps = bytes >= 1 << 22 ? max(3, repeats / 4) : repeats * 5
                let oneWay = try mpi.pingPong(bytes: bytes, peer: comm.size - 1, repeats: reps)
                let swapped = try mpi.exchange(bytes: bytes, peer: comm.size - 1, repeats: reps)
                let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: max(1, bytes / 4))
                buffer.initialize(repeating: 1)
                defer { buffer.deallocate() }
                let reduced = try timeCollective(comm) { try comm.allreduce(buffer, op: .sum, counts: .trusted) }
                let n = Double(bytes), p = Double(comm.size)
                let bus = n / reduced * 2 * (p - 1) / p / 1e9, pp = n / oneWay / 1e9, both = n / swapped / 1e9
                rows.append(LinkRow(bytes: bytes, pingpong_seconds: oneWay, pingpong_gbs: pp, allreduce_seconds: reduced,
                                    allreduce_bus_gbs: bus, latency_ratio: reduced / oneWay, bandwidth_ratio: bus / pp,
                                    exchange_seconds: swapped, exchange_gbs: both, bandwidth_ratio_exchange: bus / both))
            }
            guard comm.rank == 0 else { return }
            if json { print(try jsonLine(rows)); return }
            print("link between rank 0 and rank \(comm.size - 1) (ping-pong, one way) against a blocking allreduce on \(comm.size) ranks, medians")
            var table = TextTable("bytes", "ping-pong µs", "ping-pong GB/s", "exchange µs", "exchange GB/s", "allreduce µs",
                                  "allreduce bus GB/s", "allreduce / ping-pong time", "bus / ping-pong bandwidth", "bus / exchange bandwidth")
            for r in rows {
                table.add("\(r.bytes)", fixed(r.pingpong_seconds * 1e6, 1), fixed(r.pingpong_gbs, 3),
                          fixed(r.exchange_seconds * 1e6, 1), fixed(r.exchange_gbs, 3), fixed(r.allreduce_seconds * 1e6, 1),
                          fixed(r.allreduce_bus_gbs, 3), fixed(r.latency_ratio, 2), fixed(r.bandwidth_ratio, 2),
                          fixed(r.bandwidth_ratio_exchange, 2))
            }
            print(table.render())
            print("bus GB/s = bytes / time · 2(N−1)/N, the bytes each rank sends in a bandwidth-optimal allreduce; "
                + "goals over a network: allreduce ≤ 2× the ping-pong time for small messages, bus ≥ 0.8× the ping-pong bandwidth for large ones; "
                + "exchange: both ranks send at once (GB/s each way) — a 2-rank allreduce moves its bytes both ways, so this is the rate it can expect; "
                + "below the ping-pong's, the two directions share one resource (on one machine: its CPUs copying for the virtual link)")
        }
    }

    /// Median over ranks-synchronised repetitions of the slowest rank's time for `body`.
    private func timeCollective(_ comm: Communicator, _ body: () throws -> Void) throws -> Double {
        for _ in 0..<warmup { try body() }
        var times = [Double](repeating: 0, count: repeats)
        for i in 0..<repeats {
            try comm.barrier()
            let t0 = now()
            try body()
            times[i] = now() - t0
        }
        try comm.allreduce(&times, op: .max, counts: .trusted)
        return median(times)
    }
}
