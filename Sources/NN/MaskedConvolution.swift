import Tensor

/// The sparse side of a masked k×k convolution of any stride and padding (`SparseConvolution`:
/// activations in phased, padded frames; on images of at most `UnrolledConvolution.maxInputPixels`
/// pixels, `UnrolledConvolution`: one sparse matrix over channel × pixel), and its three passes,
/// each dense or sparse (see `MaskedPasses`). Pass sizes `n` are output pixels (images × Ho × Wo).
final class MaskedConvolution: MaskedPasses {
    private let kernels: SparseConvolution
    let unrolled: UnrolledConvolution
    /// Mask rebuilds so far, and the one the frame indices follow.
    private var rebuilds = 0, framesBuilt = -1
    /// The active weights' offsets (ascending: the packed order) and their number.
    private var positions: UnsafeMutablePointer<Int32> = .allocate(capacity: 1)
    private var positionsCapacity = 1, positionCount = 0
    /// The small input size the layer last ran at: a mask change rebuilds its unrolled index at
    /// once, and the frame indices only when a pass needs them.
    private var smallImage: (height: Int, width: Int)?

    init(name: String, weight: ParameterRef, outChannels: Int, inChannels: Int, kernelSize: Int, stride: Int, padding: Int) {
        kernels = SparseConvolution(outChannels: outChannels, inChannels: inChannels, kernelSize: kernelSize,
                                    stride: stride, padding: padding)
        unrolled = UnrolledConvolution(outChannels: outChannels, inChannels: inChannels, kernelSize: kernelSize,
                                       stride: stride, padding: padding)
        super.init(name: name, weight: weight)
    }

    deinit { positions.deallocate() }

    /// The framed passes, their indices following the current mask.
    private func frames(_ threads: Int) -> SparseConvolution {
        if framesBuilt != rebuilds {
            kernels.rebuild(activePositions: UnsafeBufferPointer(start: positions, count: positionCount), threads: threads)
            framesBuilt = rebuilds
        }
        return kernels
    }

    /// The unrolled passes, indexed for inputs of shape `s`, when its images are small enough.
    private func unrolledPasses(_ s: Shape, _ ctx: Context) -> UnrolledConvolution? {
        guard s.h * s.w <= UnrolledConvolution.maxInputPixels else { return nil }
        smallImage = (s.h, s.w)
        unrolled.prepare(height: s.h, width: s.w, activeOffsets: positions, count: positionCount,
                         token: rebuilds, threads: ctx.threads)
        return unrolled
    }

    override var activeCount: Int { positionCount }
    override var activeOffsets: UnsafeMutablePointer<Int32> { positions }
    override func rebuild(mask: UnsafePointer<Float>, activePositions: [Int32]?, threads: Int) {
        rebuilds += 1
        let list = activePositions ?? nonZeroPositions(of: mask, count: weight.count)
        if list.count > positionsCapacity {
            positions.deallocate()
            positionsCapacity = list.count
            positions = .allocate(capacity: positionsCapacity)
        }
        list.withUnsafeBufferPointer { if let base = $0.baseAddress { positions.update(from: base, count: list.count) } }
        positionCount = list.count
        if let image = smallImage {
            unrolled.prepare(height: image.height, width: image.width, activeOffsets: positions, count: positionCount,
                             token: rebuilds, threads: threads)
        } else {
            _ = frames(threads)
        }
    }

    /// `y = (W⊙M) ⊛ x` for `x` of shape `s`, dense (`dense()`) or sparse.
    func forward(_ w: UnsafePointer<Float>, x: UnsafePointer<Float>, shape s: Shape, outputPixels n: Int,
                 y: UnsafeMutablePointer<Float>, _ ctx: Context, dense: () -> Void) {
        kernels.outputGradientChanged()
        unrolled.outputGradientChanged()
        let small = unrolledPasses(s, ctx)
        run(.forward, n: n, ctx, dense: dense) {
            if let small {
                small.forward(weights: w, x: x, batch: s.n, y: y, isa: ctx.sparseISA, threads: ctx.threads)
            } else {
                frames(ctx.threads).forward(weights: w, x: x, batch: s.n, height: s.h, width: s.w, y: y,
                                isa: ctx.sparseISA, threads: ctx.threads)
            }
        }
    }

    /// `dW += dY ⊛ X`: `dense(target, β)` or at the mask's positions (see
    /// `MaskedPasses.weightGradient`). The sparse path frames `x` again when the forward pass
    /// ran dense.
    func weightGradient(_ store: ParameterStore, x: UnsafePointer<Float>, shape s: Shape, dy: UnsafePointer<Float>,
                        outputPixels n: Int, _ ctx: Context,
                        dense: (_ target: UnsafeMutablePointer<Float>, _ beta: Float) -> Void) {
        let framed = lastPaths[KernelPass.forward.rawValue] == .sparse
        var loaded = false
        let small = unrolledPasses(s, ctx)
        weightGradient(store, n: n, ctx, dense: dense) { output in
            if !framed && !loaded {
                if let small {
                    small.loadInput(x, batch: s.n, threads: ctx.threads)
                } else {
                    frames(ctx.threads).loadInput(x, batch: s.n, height: s.h, width: s.w, threads: ctx.threads)
                }
                loaded = true
            }
            if let small {
                small.weightGradient(dy: dy, into: output, isa: ctx.sparseISA, threads: ctx.threads)
            } else {
                frames(ctx.threads).weightGradient(dy: dy, into: output, isa: ctx.sparseISA, threads: ctx.threads)
            }
        }
    }

    /// `dx = (W⊙M)ᵀ ⊛ dy` for an input of shape `s`, dense (`dense()`) or sparse.
    func inputGradient(_ w: UnsafePointer<Float>, dy: UnsafePointer<Float>, shape s: Shape, outputPixels n: Int,
                       dx: UnsafeMutablePointer<Float>, _ ctx: Context, dense: () -> Void) {
        let small = unrolledPasses(s, ctx)
        run(.inputGradient, n: n, ctx, dense: dense) {
            if let small {
                small.inputGradient(weights: w, dy: dy, dx: dx, batch: s.n, isa: ctx.sparseISA, threads: ctx.threads)
            } else {
                frames(ctx.threads).inputGradient(weights: w, dy: dy, dx: dx, batch: s.n, height: s.h, width: s.w,
                                      isa: ctx.sparseISA, threads: ctx.threads)
            }
        }
    }
}
