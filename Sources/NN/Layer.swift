import Dispatch
import Tensor

/// What a layer is, for the per-type time breakdown of the step benchmark.
public enum LayerKind: String, CaseIterable, Sendable {
    case conv, linear, batchNorm, relu, pool, add, flatten, loss, input
}

/// Which convolution kernel layers use.
public enum ConvolutionAlgorithm: String, CaseIterable, Sendable {
    /// For 3×3 stride-1 layers the pixel product (≤ 2×2 pixels), Winograd F(4×4, 3×3) (from 64
    /// channels) or the direct kernel where they apply and pay; im2col + sgemm elsewhere.
    case automatic
    /// im2col + sgemm everywhere.
    case gemm
    /// The direct kernel wherever it applies (for tests and benchmarks).
    case direct
    /// Winograd F(2×2, 3×3) for every 3×3, stride-1, padding-1 layer (for tests and benchmarks).
    case winograd
    /// Winograd F(4×4, 3×3) for every 3×3, stride-1, padding-1 layer (for tests and benchmarks).
    case winograd4
}

/// Which direct 3×3 kernel a convolution runs (`Conv2d.directKernel`).
public enum DirectKernel: String, Sendable {
    /// Zero-padded copy of the input, vectors of pixels along rows (`Conv3x3.forward`).
    case padded
    /// Whole small images per vector, unpadded (`Conv3x3.smallForward`; AVX-512).
    case smallImages
}

/// Whether masked layers may run sparse kernels (`sparse_kernels` in a run's config).
public enum SparseKernelMode: String, CaseIterable, Sendable {
    /// Dense GEMMs everywhere (masked weights are zeros in them).
    case off
    /// Sparse kernels in every masked layer that supports them, whatever the density.
    case on
    /// Per layer and pass, whichever was faster when both were timed for this batch and
    /// number of active weights (dense without timing above density 0.5).
    case auto
}

/// Settings and scratch shared by all layers of one network.
public final class Context {
    /// Whether masked layers may run sparse kernels. Off unless the trainer turns it on once
    /// the mask is in place (SNIP and Synflow scoring need dense passes).
    public var sparseKernels = SparseKernelMode.off
    /// Set for steps whose weight gradient must be dense everywhere (RiGL's regrowth scores):
    /// sparse layers then compute their weight gradient with a dense GEMM.
    public var denseWeightGradient = false
    /// Variant of the sparse kernels (the widest this CPU runs unless `SPARSETRAIN_ISA` says).
    public var kernelISA = KernelISA.best
    /// Dense-or-sparse decisions of `.auto` mode, keyed "layer/pass/batch/active weights". Saved
    /// in checkpoints, so a resumed run takes the same paths (and rounds the same way).
    public var kernelChoices: [String: KernelPath] = [:]
    /// Threads for parallel loops inside a layer (BLAS threads are set separately).
    public var threads: Int = 1
    /// Training mode: batch statistics in BN, caches kept for backward.
    public var training = true
    /// When true, each leaf layer adds its forward and backward time to `times`.
    public var profiling = false
    public private(set) var times: [LayerKind: Double] = [:]
    /// Largest im2col scratch per worker, in floats; a batch runs as chunks of images that fit.
    public var columnBudget = 1 << 20
    /// Largest Winograd scratch per worker (transformed input and products), in floats.
    public var transformBudget = 1 << 23
    /// How convolutions run: `.automatic` takes the pixel product, Winograd or the direct 3×3
    /// kernel where they apply and are faster (`Conv2d.denseAlgorithm`), `.gemm` always
    /// im2col + sgemm.
    public var convolutionAlgorithm = ConvolutionAlgorithm.automatic
    /// Per-worker scratch (im2col columns) and partial weight gradients of workers 1…, shared
    /// by all layers.
    private var scratch: [Tensor] = []
    private var partials: [Tensor] = []
    private let packedWeights = Tensor()

    public init() {}

    /// Runs `body`, adding its duration to `kind` when profiling.
    @inline(__always)
    public func timed<T>(_ kind: LayerKind, _ body: () -> T) -> T {
        var layerSeconds = 0.0
        return timed(kind, layerSeconds: &layerSeconds, body)
    }

    /// Runs `body`, adding its duration to `kind` and to the layer's own `layerSeconds` when
    /// profiling.
    @inline(__always)
    public func timed<T>(_ kind: LayerKind, layerSeconds: inout Double, _ body: () -> T) -> T {
        guard profiling else { return body() }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let r = body()
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
        times[kind, default: 0] += seconds
        layerSeconds += seconds
        return r
    }

    public func resetTimes() { times = [:] }

    // Gradient buffers shared by all layers: a layer's backward takes its input gradient from
    // here and releases the output gradient it was given once it has read it, so only the
    // gradients alive at the same time take memory (not one buffer per layer).
    private var freeGradients: [Tensor] = []
    private var pooled = Set<ObjectIdentifier>()
    private var references: [ObjectIdentifier: Int] = [:]

    /// A gradient buffer of `shape` (contents unspecified) with one reference, the smallest free
    /// one that fits. Reused from step to step, so steady-state steps allocate nothing.
    public func gradientBuffer(_ shape: Shape) -> Tensor {
        // Smallest buffer that fits, else the largest (it grows once); no allocation per call.
        var best: Int? = nil, largest: Int? = nil
        for i in freeGradients.indices {
            let c = freeGradients[i].capacityCount
            if c >= shape.count && (best.map { c < freeGradients[$0].capacityCount } ?? true) { best = i }
            if largest.map({ c > freeGradients[$0].capacityCount }) ?? true { largest = i }
        }
        let t: Tensor
        if let i = best ?? largest {
            t = freeGradients.remove(at: i)
        } else {
            t = Tensor()
            pooled.insert(ObjectIdentifier(t))
        }
        t.reshape(shape)
        references[ObjectIdentifier(t)] = 1
        return t
    }

    /// Adds a reference to a pooled gradient (no effect on other tensors).
    public func retain(_ t: Tensor) {
        let id = ObjectIdentifier(t)
        if pooled.contains(id) { references[id, default: 0] += 1 }
    }

    /// Whether `t` is a pooled gradient held by one reference only: its holder may overwrite it
    /// with its own result (element by element) and hand it on instead of taking a new buffer,
    /// whose first writes would each read a cache line from memory before writing it.
    public func isSoleReference(_ t: Tensor) -> Bool {
        let id = ObjectIdentifier(t)
        return pooled.contains(id) && references[id] == 1
    }

    /// Drops a reference; the buffer returns to the pool at zero (no effect on other tensors).
    public func release(_ t: Tensor) {
        let id = ObjectIdentifier(t)
        guard pooled.contains(id), let r = references[id] else { return }
        if r <= 1 {
            references[id] = nil
            freeGradients.append(t)
        } else {
            references[id] = r - 1
        }
    }

    /// Elementwise work below this many elements stays on one thread.
    public func chunks(for elements: Int) -> Int { elements >= 1 << 16 ? threads : 1 }

    /// One scratch buffer of at least `count` floats per worker.
    func workerScratch(count: Int) -> [SendablePointer<Float>] {
        while scratch.count < threads { scratch.append(Tensor()) }
        return scratch.prefix(threads).map { t in
            if t.count < count { t.reshape(Shape(n: 1, c: count)) }
            return SendablePointer(t.data)
        }
    }

    /// One buffer of at least `count` floats for a convolution's weights packed for the direct
    /// kernel: each pass packs them and reads them at once, so all layers share it.
    func packedWeightScratch(count: Int) -> UnsafeMutablePointer<Float> {
        if packedWeights.count < count { packedWeights.reshape(Shape(n: 1, c: count)) }
        return packedWeights.data
    }

    /// Where each worker accumulates its part of a weight gradient (`+=`): worker 0 straight
    /// into `target`, the others into zeroed scratch that `addPartials` folds into `target`.
    func workerPartials(count: Int, target: UnsafeMutablePointer<Float>) -> [SendablePointer<Float>] {
        while partials.count < threads - 1 { partials.append(Tensor()) }
        return [SendablePointer(target)] + partials.prefix(threads - 1).map { t in
            t.reshape(Shape(n: 1, c: count))
            t.zero()
            return SendablePointer(t.data)
        }
    }

    /// `target += Σ_{workers > 0} partial[w]` (worker 0 wrote into `target` itself).
    func addPartials(_ parts: [SendablePointer<Float>], count: Int, into target: UnsafeMutablePointer<Float>) {
        for p in parts.dropFirst() {
            precondition(p.pointer != target)
            var i = 0
            while i < count { target[i] += p.pointer[i]; i &+= 1 }
        }
    }

    /// Splits `0 ..< total` images into chunks of `size` and runs them on `threads` workers
    /// (chunk k on worker k mod threads, so each worker reuses its scratch). With fewer chunks
    /// than workers, one worker runs and passes the thread count on (`inner`) to its kernels.
    /// BLAS runs single-threaded inside the workers (see `BLAS.threads`).
    func forEachChunk(
        of total: Int, size: Int, _ body: @Sendable (_ worker: Int, _ first: Int, _ count: Int, _ inner: Int) -> Void
    ) {
        let chunks = (total + size - 1) / size
        let workers = min(threads, chunks)
        if workers <= 1 {
            for k in 0..<chunks { body(0, k * size, min(size, total - k * size), threads) }
            return
        }
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            for k in Swift.stride(from: w, to: chunks, by: workers) {
                body(w, k * size, min(size, total - k * size), 1)
            }
        }
    }
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
    /// Given dL/d(output), accumulates parameter gradients and returns dL/d(input).
    /// The returned tensor comes from `ctx.gradientBuffer` and belongs to the caller; the layer
    /// calls `ctx.release(dy)` once it has read `dy`. Layers built with
    /// `needsInputGradient == false` may return an empty tensor.
    func backward(_ outputGradient: Tensor, _ ctx: Context) -> Tensor
    /// Parameters owned by this layer and its children, in forward order.
    var parameterRefs: [ParameterRef] { get }
    /// Floating-point operations of one forward pass on an input of `shape` (multiply-adds × 2;
    /// only GEMM-shaped work is counted, as benchmarks usually do).
    func forwardFlops(for shape: Shape) -> Double
    /// Batch-norm layers inside (for running statistics and synchronised BN).
    var batchNorms: [BatchNorm] { get }
    /// Forward FLOPs of each weight tensor inside (dense), for an input of `shape`: the FLOP
    /// ideal of a mask is `Σ density · flops / Σ flops`.
    func weightFlops(for shape: Shape) -> [(ref: ParameterRef, flops: Double)]
    /// Paths the masked layers inside took in their last step.
    var kernelReports: [KernelReport] { get }
    /// Brings the sparse indices of the masked layers inside up to date with the mask now (they
    /// otherwise follow it at their next pass).
    func refreshSparseKernels(_ ctx: Context)
}

extension Layer {
    public var parameterRefs: [ParameterRef] { [] }
    public func forwardFlops(for shape: Shape) -> Double { 0 }
    public var batchNorms: [BatchNorm] { [] }
    public func weightFlops(for shape: Shape) -> [(ref: ParameterRef, flops: Double)] { [] }
    public var kernelReports: [KernelReport] { [] }
    public func refreshSparseKernels(_ ctx: Context) {}
}
