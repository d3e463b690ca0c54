import Tensor

/// The sparse side of a masked k×k convolution of any stride and padding (`SparseConvolution`:
/// activations in phased, padded frames; on images of at most `UnrolledConvolution.maxInputPixels`
/// pixels, `UnrolledConvolution`: one sparse matrix over channel × pixel), and its three passes,
/// each dense or sparse (see `MaskedPasses`). Pass sizes `n` are output pixels (images × Ho × Wo).
final class MaskedConvolution: MaskedPasses {
    let kernels: SparseConvolution
    let unrolled: UnrolledConvolution
    /// Mask rebuilds so far (the unrolled index follows at its next pass).
    private var rebuilds = 0

    init(name: String, weight: ParameterRef, outChannels: Int, inChannels: Int, kernelSize: Int, stride: Int, padding: Int) {
        kernels = SparseConvolution(outChannels: outChannels, inChannels: inChannels, kernelSize: kernelSize,
                                    stride: stride, padding: padding)
        unrolled = UnrolledConvolution(outChannels: outChannels, inChannels: inChannels, kernelSize: kernelSize,
                                       stride: stride, padding: padding)
        super.init(name: name, weight: weight)
    }

    /// The unrolled passes, indexed for inputs of shape `s`, when its images are small enough.
    private func unrolledPasses(_ s: Shape, _ ctx: Context) -> UnrolledConvolution? {
        guard s.h * s.w <= UnrolledConvolution.maxInputPixels else { return nil }
        unrolled.prepare(height: s.h, width: s.w, activeOffsets: kernels.index.weightOffset, count: kernels.count,
                         token: rebuilds, threads: ctx.threads)
        return unrolled
    }

    override var activeCount: Int { kernels.count }
    override var activeOffsets: UnsafeMutablePointer<Int32> { kernels.index.weightOffset }
    override func rebuild(mask: UnsafePointer<Float>, activePositions: [Int32]?, threads: Int) {
        rebuilds += 1
        if let activePositions {
            activePositions.withUnsafeBufferPointer { kernels.rebuild(activePositions: $0, threads: threads) }
        } else {
            kernels.rebuild(mask: mask, threads: threads)
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
                kernels.forward(weights: w, x: x, batch: s.n, height: s.h, width: s.w, y: y,
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
                    kernels.loadInput(x, batch: s.n, height: s.h, width: s.w, threads: ctx.threads)
                }
                loaded = true
            }
            if let small {
                small.weightGradient(dy: dy, into: output, isa: ctx.sparseISA, threads: ctx.threads)
            } else {
                kernels.weightGradient(dy: dy, into: output, isa: ctx.sparseISA, threads: ctx.threads)
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
                kernels.inputGradient(weights: w, dy: dy, dx: dx, batch: s.n, height: s.h, width: s.w,
                                      isa: ctx.sparseISA, threads: ctx.threads)
            }
        }
    }
}
