import ArgumentParser
import Foundation
import NN
import Tensor

/// `sparsetrain bench kernels`: the sparse kernels of a masked linear layer against OpenBLAS
/// sgemm on the same shapes, at a list of densities (forward, input gradient, weight gradient).
struct BenchKernels: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "Time the sparse linear kernels against OpenBLAS sgemm at several densities.")

    @Option(help: "Output features (rows of W).")
    var outFeatures: Int = 4096
    @Option(help: "Input features (columns of W).")
    var inFeatures: Int = 4096
    @Option(help: "Batch (columns of X).")
    var batch: Int = 128
    @Option(help: ArgumentHelp("Densities, comma-separated.", valueName: "list"))
    var densities: String = "1,0.5,0.2,0.1,0.05,0.01"
    @Option(help: "Threads for both engines. Default: all cores.")
    var threads: Int?
    @Option(help: "Timed repetitions (the median is reported).")
    var steps: Int = 5
    @Option(help: "Kernel variant: avx512, avx2 or portable. Default: the widest this CPU runs.")
    var isa: String?
    @Option(help: "Sources per block of the sparse index (default: chosen from the density).")
    var blockWidth: Int?
    @Flag(help: "Print one JSON object per density instead of a table.")
    var json = false

    struct Row: Codable {
        var density: Double, nnz: Int
        var sgemm_forward_ms: Double, sgemm_input_gradient_ms: Double, sgemm_weight_gradient_ms: Double
        var sparse_forward_ms: Double, sparse_input_gradient_ms: Double, sparse_weight_gradient_ms: Double
        var forward_speedup: Double, input_gradient_speedup: Double, weight_gradient_speedup: Double
        /// Weight-gradient kernel speed relative to the forward kernel's (same useful FLOPs).
        var weight_gradient_vs_forward: Double
        /// sgemm's three passes over the sparse kernels' three passes.
        var step_speedup: Double
    }

    func parsedDensities() throws -> [Double] {
        try densities.split(separator: ",").map {
            guard let d = Double($0), d > 0, d <= 1 else { throw InputError("--densities: '\($0)' is not a number in (0, 1]") }
            return d
        }
    }


    func validate() throws {
        guard outFeatures > 0, inFeatures > 0, batch > 0, steps > 0 else {
            throw InputError("--out-features, --in-features, --batch and --steps must be positive")
        }
        guard outFeatures * inFeatures <= Int(Int32.max) else { throw InputError("the weight must have fewer than 2^31 entries") }
        if let t = threads, t < 1 { throw InputError("--threads must be at least 1") }
        if let b = blockWidth, b < 1 { throw InputError("--block-width must be at least 1") }
        _ = try parsedDensities()
        _ = try selectedISA(isa)
    }

    func run() throws {
        let threadCount = threads ?? ProcessInfo.processInfo.activeProcessorCount
        let variant = try selectedISA(isa)
        let m = outFeatures, k = inFeatures, n = batch
        var rng = Xoshiro256(seed: 5)
        func buffer(_ count: Int) -> UnsafeMutablePointer<Float> {
            let p = allocateAlignedFloats(count)
            for i in 0..<count { p[i] = rng.nextFloat() - 0.5 }
            return p
        }
        let w = buffer(m * k), x = buffer(k * n), y = buffer(m * n), dy = buffer(m * n), dx = buffer(k * n)
        let dw = buffer(m * k), mask = UnsafeMutablePointer<Float>.allocate(capacity: m * k)
        defer { for p in [w, x, y, dy, dx, dw, mask] { p.deallocate() } }
        let time = { (body: () -> Void) in medianSeconds(runs: steps, body) }
        BLAS.threads = threadCount
        let gemmForward = time { gemm(.none, .none, m: m, n: n, k: k, a: w, lda: k, b: x, ldb: n, c: y, ldc: n) }
        let gemmInput = time { gemm(.transposed, .none, m: k, n: n, k: m, a: w, lda: k, b: dy, ldb: n, c: dx, ldc: n) }
        let gemmWeight = time { gemm(.none, .transposed, m: m, n: k, k: n, a: dy, lda: n, b: x, ldb: n, beta: 1, c: dw, ldc: k) }
        var rows: [Row] = []
        for d in try parsedDensities() {
            for i in 0..<(m * k) { mask[i] = rng.nextDouble() < d ? 1 : 0 }
            let byRow = SparseIndex(weightRows: m, weightColumns: k, orientation: .rows)
            byRow.rebuild(mask: mask, blockWidth: blockWidth)
            // As in training: the forward pass gathers the values into index order from the
            // weights — packed in row-major order when the parameter store keeps them so, else
            // the dense weight — and the input gradient scatters over the same index with them.
            let rowValues = UnsafeMutablePointer<Float>.allocate(capacity: max(1, byRow.count))
            defer { rowValues.deallocate() }
            let packed = UnsafeMutablePointer<Float>.allocate(capacity: max(1, byRow.count))
            defer { packed.deallocate() }
            for j in 0..<byRow.count { packed[j] = w[Int(byRow.rowMajorOffset[j])] }
            let source: SparseWeights = d <= ParameterStore.packedValuesMaxDensity ? .packed(packed) : .dense(w)
            let forward = time {
                SparseKernels.gatherValues(byRow, weights: source, into: rowValues, threads: threadCount)
                SparseKernels.multiply(byRow, weights: rowValues, weightsInIndexOrder: true, x: x, ldx: n, n: n, y: y, ldy: n, isa: variant, threads: threadCount)
            }
            let input = time {
                SparseKernels.scatterTransposed(byRow, values: rowValues, dy: dy, lddy: n, n: n, dx: dx, lddx: n,
                                                isa: variant, threads: threadCount)
            }
            let weight = time {
                SparseKernels.sampledProduct(byRow, dy: dy, lddy: n, x: x, ldx: n, n: n, into: .packed(dw),
                                             isa: variant, threads: threadCount)
            }
            rows.append(Row(
                density: d, nnz: byRow.count,
                sgemm_forward_ms: gemmForward * 1e3, sgemm_input_gradient_ms: gemmInput * 1e3,
                sgemm_weight_gradient_ms: gemmWeight * 1e3, sparse_forward_ms: forward * 1e3,
                sparse_input_gradient_ms: input * 1e3, sparse_weight_gradient_ms: weight * 1e3,
                forward_speedup: gemmForward / forward, input_gradient_speedup: gemmInput / input,
                weight_gradient_speedup: gemmWeight / weight, weight_gradient_vs_forward: forward / weight,
                step_speedup: (gemmForward + gemmInput + gemmWeight) / (forward + input + weight)))
        }
        if json {
            for r in rows { print(try jsonLine(r)) }
            return
        }
        print("bench kernels: linear \(m)×\(k), batch \(n), \(threadCount) thread(s), median of \(steps); sparse kernels \(variant), OpenBLAS core \(BLAS.coreName)")
        print(String(format: "sgemm: forward %.2f ms, input gradient %.2f ms, weight gradient %.2f ms (%.0f GFLOP/s forward)",
                     gemmForward * 1e3, gemmInput * 1e3, gemmWeight * 1e3, 2 * Double(m * k * n) / gemmForward / 1e9))
        var table = TextTable("density", "nnz", "fwd ms", "×sgemm", "dX ms", "×sgemm", "dW ms", "×sgemm", "3 passes ×sgemm",
                              "dW/fwd speed", "fwd GFLOP/s")
        for r in rows {
            table.add(fixed(r.density, 3), "\(r.nnz)", fixed(r.sparse_forward_ms, 3), fixed(r.forward_speedup, 2),
                      fixed(r.sparse_input_gradient_ms, 3), fixed(r.input_gradient_speedup, 2),
                      fixed(r.sparse_weight_gradient_ms, 3), fixed(r.weight_gradient_speedup, 2),
                      fixed(r.step_speedup, 2), fixed(r.weight_gradient_vs_forward, 2),
                      fixed(2 * Double(r.nnz * n) / (r.sparse_forward_ms / 1e3) / 1e9, 1))
        }
        print(table.render())
        print("(sparse forward includes gathering the weights into index order, as training does: from the packed weights at density ≤ \(ParameterStore.packedValuesMaxDensity), as the parameter store keeps them, else from W; the input gradient scatters over the same index with them)")
    }
}

/// The sparse kernel variant an `--isa` option names (default: the widest this CPU runs).
func selectedISA(_ name: String?) throws -> KernelISA {
    guard let name else { return .best }
    guard let v = KernelISA(name: name) else { throw InputError("--isa: '\(name)' is not avx512, avx2 or portable") }
    guard v.isSupported else { throw InputError("--isa: this CPU cannot run \(v)") }
    return v
}
