import Tensor

/// The sparse side of a masked k×k convolution of any stride and padding (`SparseConvolution`:
/// activations in phased, padded frames), and its three passes, each dense or sparse (see
/// `MaskedPasses`). Pass sizes `n` are output pixels (images × Ho × Wo).
final class MaskedConvolution: MaskedPasses {
    let kernels: SparseConvolution

    init(name: String, weight: ParameterRef, outChannels: Int, inChannels: Int, kernelSize: Int, stride: Int, padding: Int) {
        kernels = SparseConvolution(outChannels: outChannels, inChannels: inChannels, kernelSize: kernelSize,
                                    stride: stride, padding: padding)
        super.init(name: name, weight: weight)
    }

    override var activeCount: Int { kernels.count }
    override var activeOffsets: UnsafeMutablePointer<Int32> { kernels.index.weightOffset }
    override func rebuild(mask: () -> UnsafePointer<Float>, activePositions: [Int32]?, threads: Int) {
        if let activePositions {
            activePositions.withUnsafeBufferPointer { kernels.rebuild(activePositions: $0, threads: threads) }
        } else {
            kernels.rebuild(mask: mask(), threads: threads)
        }
    }

    /// `y = (W⊙M) ⊛ x` for `x` of shape `s`, dense (`dense()`) or sparse.
    func forward(_ store: ParameterStore, x: UnsafePointer<Float>, shape s: Shape, outputPixels n: Int,
                 y: UnsafeMutablePointer<Float>, _ ctx: Context, dense: () -> Void) {
        kernels.outputGradientChanged()
        run(.forward, n: n, ctx, dense: dense) {
            kernels.forward(weights: sparseWeights(store), x: x, batch: s.n, height: s.h, width: s.w, y: y,
                            isa: ctx.kernelISA, threads: ctx.threads)
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
        weightGradient(store, n: n, ctx, dense: dense) { output in
            if !framed && !loaded {
                kernels.loadInput(x, batch: s.n, height: s.h, width: s.w, isa: ctx.kernelISA, threads: ctx.threads)
                loaded = true
            }
            kernels.weightGradient(dy: dy, into: output, isa: ctx.kernelISA, threads: ctx.threads)
        }
    }

    /// `dx = (W⊙M)ᵀ ⊛ dy` for an input of shape `s`, dense (`dense()`) or sparse.
    func inputGradient(_ store: ParameterStore, dy: UnsafePointer<Float>, shape s: Shape, outputPixels n: Int,
                       dx: UnsafeMutablePointer<Float>, _ ctx: Context, dense: () -> Void) {
        run(.inputGradient, n: n, ctx, dense: dense) {
            kernels.inputGradient(weights: sparseWeights(store), dy: dy, dx: dx, batch: s.n, height: s.h, width: s.w,
                                  isa: ctx.kernelISA, threads: ctx.threads)
        }
    }
}
