import Dispatch
import Tensor

/// What a layer is (or a part of one: `im2col` covers im2col and col2im inside convolutions),
/// for the per-type time breakdown of the step benchmark.
public enum LayerKind: String, CaseIterable, Sendable {
    case conv, im2col, linear, batchNorm, relu, pool, add, flatten, loss, input
}

/// Settings and scratch shared by all layers of one network.
public final class Context {
    /// Threads for parallel loops inside a layer (BLAS threads are set separately).
    public var threads: Int = 1
    /// Training mode: batch statistics in BN, caches kept for backward.
    public var training = true
    /// When true, each leaf layer adds its forward and backward time to `times`.
    public var profiling = false
    public private(set) var times: [LayerKind: Double] = [:]
    /// Scratch for im2col columns, shared by every convolution.
    public let columns = Tensor()
    /// Largest im2col scratch in floats; larger batches run as several GEMMs.
    public var columnBudget = 1 << 24

    public init() {}

    /// Runs `body`, adding its duration to `kind` when profiling.
    @inline(__always)
    public func timed<T>(_ kind: LayerKind, _ body: () -> T) -> T {
        guard profiling else { return body() }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let r = body()
        times[kind, default: 0] += Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
        return r
    }

    public func resetTimes() { times = [:] }

    /// Elementwise work below this many elements stays on one thread.
    public func chunks(for elements: Int) -> Int { elements >= 1 << 16 ? threads : 1 }
}

/// Errors found while building a model or feeding it.
public struct ModelError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ message: String) { description = message }
}

/// A forward/backward pair. Forward caches what backward needs; backward *adds* into the
/// parameter gradients and returns the gradient with respect to the input.
public protocol Layer: AnyObject {
    /// Output shape for an input of `shape` (batch size included); throws when the input cannot
    /// be taken (sizes that reach zero, channel mismatch).
    func outputShape(for shape: Shape) throws -> Shape
    /// Computes the output for `input`; the returned tensor is owned by the layer and valid
    /// until its next forward.
    func forward(_ input: Tensor, _ ctx: Context) -> Tensor
    /// Given dL/d(output), accumulates parameter gradients and returns dL/d(input)
    /// (owned by the layer). Layers built with `needsInputGradient == false` may return an
    /// empty tensor.
    func backward(_ outputGradient: Tensor, _ ctx: Context) -> Tensor
    /// Parameters owned by this layer and its children, in forward order.
    var parameterRefs: [ParameterRef] { get }
    /// Floating-point operations of one forward pass on an input of `shape` (multiply-adds × 2;
    /// only GEMM-shaped work is counted, as benchmarks usually do).
    func forwardFlops(for shape: Shape) -> Double
    /// Batch-norm layers inside (for running statistics and synchronised BN).
    var batchNorms: [BatchNorm] { get }
}

extension Layer {
    public var parameterRefs: [ParameterRef] { [] }
    public func forwardFlops(for shape: Shape) -> Double { 0 }
    public var batchNorms: [BatchNorm] { [] }
}
