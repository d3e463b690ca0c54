import Dispatch
import Tensor

/// Which implementation ran a pass of a masked layer.
public enum KernelPath: String, Sendable, Codable {
    case dense, sparse
}

/// The passes of a masked layer's step.
public enum KernelPass: Int, CaseIterable, Sendable {
    case forward, inputGradient, weightGradient
}

/// What a masked layer ran in its last step, for `bench step` and the logs.
public struct KernelReport: Sendable, Equatable {
    public var name: String
    /// Active fraction of the layer's weight.
    public var density: Double
    /// Paths of the last forward, input-gradient and weight-gradient passes (nil: not run).
    public var forward: KernelPath?
    public var inputGradient: KernelPath?
    public var weightGradient: KernelPath?
    /// Forward + backward seconds of the layer while `ctx.profiling`, since it was built.
    public var seconds: Double
}

/// The sparse side of a masked linear layer W[rows × cols]: the compressed indices of its mask
/// (rebuilt in place when the store's mask generation moves), its values in index order, and for
/// each pass and batch size the path to take.
///
/// Choosing (`SparseKernelMode.auto`): both paths are timed (twice each, the faster run kept)
/// the first time a pass runs at a batch size and number of active weights; sparse is taken
/// when it is at least 10% faster. Above density 0.5 the dense path is taken untimed (the sparse
/// kernels are slower than sgemm there on every CPU measured). A change of the mask that keeps
/// the number of active weights (RiGL) keeps the choices; they live in `Context.kernelChoices`.
final class SparseLinearKernels {
    let byRow: SparseIndex
    let byColumn: SparseIndex
    /// The weights in the order of the index a pass runs over (`byRow` for the forward pass,
    /// `byColumn` for the input gradient), gathered at the start of the pass: the kernels then
    /// read them as one stream instead of hopping through the dense weight.
    private(set) var values: UnsafeMutablePointer<Float>
    private var valuesCapacity = 1
    private var builtGeneration = -1
    /// Paths of the last step, per pass.
    var lastPaths: [KernelPath?] = [nil, nil, nil]

    init(rows: Int, cols: Int) {
        byRow = SparseIndex(weightRows: rows, weightColumns: cols, orientation: .rows)
        byColumn = SparseIndex(weightRows: rows, weightColumns: cols, orientation: .columns)
        values = .allocate(capacity: 1)
    }

    deinit { values.deallocate() }

    var density: Double { byRow.density }

    /// Rebuilds the indices if the mask changed since they were built.
    func refresh(mask: UnsafePointer<Float>, generation: Int) {
        guard generation != builtGeneration else { return }
        byRow.rebuild(mask: mask)
        byColumn.rebuild(mask: mask)
        if byRow.count > valuesCapacity {
            values.deallocate()
            valuesCapacity = byRow.count
            values = .allocate(capacity: valuesCapacity)
        }
        builtGeneration = generation
    }

    /// The path for `pass` of layer `layer` at batch `n`; in `.auto` mode the first call for a
    /// (pass, n, active weights) times `dense` and `sparse` (which must have no lasting effect)
    /// and records the faster in `ctx.kernelChoices`.
    func path(_ pass: KernelPass, layer: String, n: Int, _ ctx: Context, time dense: () -> Void,
              _ sparse: () -> Void) -> KernelPath {
        switch ctx.sparseKernels {
        case .off: return .dense
        case .on: return .sparse
        case .auto:
            if density > 0.5 { return .dense }
            let key = "\(layer)/\(pass)/\(n)/\(byRow.count)"
            if let known = ctx.kernelChoices[key] { return known }
            var bestDense = Double.infinity, bestSparse = Double.infinity
            for _ in 0..<2 {
                bestDense = min(bestDense, seconds(dense))
                bestSparse = min(bestSparse, seconds(sparse))
            }
            let choice: KernelPath = bestSparse < 0.9 * bestDense ? .sparse : .dense
            ctx.kernelChoices[key] = choice
            return choice
        }
    }

    private func seconds(_ body: () -> Void) -> Double {
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        return Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
    }
}

extension Context {
    /// `kernelChoices` as text, one "key=path" line each, sorted (checkpoints, rank agreement).
    public var kernelChoicesText: String {
        get { kernelChoices.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value.rawValue)" }.joined(separator: "\n") }
        set {
            kernelChoices = [:]
            for line in newValue.split(separator: "\n") {
                let parts = line.split(separator: "=", maxSplits: 1)
                if parts.count == 2, let path = KernelPath(rawValue: String(parts[1])) { kernelChoices[String(parts[0])] = path }
            }
        }
    }
}
