/// Naive masked convolution in Double, straight from the definition: the reference the sparse
/// convolution passes are tested against. Activations `[C][N][H][W]`, weights `[Cout][Cin][k][k]`.
extension SparseConvolution {
    /// Visits every (o, c, kh, kw, n, oh, ow) whose input pixel lies inside the image with the
    /// weight offset, the input offset and the output offset.
    private func forEachTap(batch: Int, height: Int, width: Int, _ body: (Int, Int, Int) -> Void) {
        let g = ConvGeometry(channels: inChannels, height: height, width: width, kernelH: kernelSize,
                             kernelW: kernelSize, stride: stride, padding: padding)
        let ho = g.outHeight, wo = g.outWidth, k = kernelSize
        for o in 0..<outChannels {
            for c in 0..<inChannels {
                for kh in 0..<k {
                    for kw in 0..<k {
                        let wOff = ((o * inChannels + c) * k + kh) * k + kw
                        for n in 0..<batch {
                            for oh in 0..<ho {
                                let ih = oh * stride + kh - padding
                                guard ih >= 0, ih < height else { continue }
                                for ow in 0..<wo {
                                    let iw = ow * stride + kw - padding
                                    guard iw >= 0, iw < width else { continue }
                                    body(wOff, ((c * batch + n) * height + ih) * width + iw,
                                         ((o * batch + n) * ho + oh) * wo + ow)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `y = (W⊙M) ⊛ x`.
    public func referenceForward(weights w: [Float], mask: [Float], x: [Float], batch: Int, height: Int, width: Int) -> [Float] {
        var y = [Double](repeating: 0, count: outputCount(batch: batch, height: height, width: width))
        forEachTap(batch: batch, height: height, width: width) { wo, xo, yo in
            if mask[wo] != 0 { y[yo] += Double(w[wo]) * Double(x[xo]) }
        }
        return y.map { Float($0) }
    }

    /// `dW = dY ⊛ X` at the mask's positions (0 elsewhere).
    public func referenceWeightGradient(dy: [Float], x: [Float], mask: [Float], batch: Int, height: Int, width: Int) -> [Float] {
        var dw = [Double](repeating: 0, count: mask.count)
        forEachTap(batch: batch, height: height, width: width) { wo, xo, yo in
            if mask[wo] != 0 { dw[wo] += Double(dy[yo]) * Double(x[xo]) }
        }
        return dw.map { Float($0) }
    }

    /// `dX = (W⊙M)ᵀ ⊛ dY`.
    public func referenceInputGradient(weights w: [Float], mask: [Float], dy: [Float], batch: Int, height: Int, width: Int) -> [Float] {
        var dx = [Double](repeating: 0, count: inChannels * batch * height * width)
        forEachTap(batch: batch, height: height, width: width) { wo, xo, yo in
            if mask[wo] != 0 { dx[xo] += Double(w[wo]) * Double(dy[yo]) }
        }
        return dx.map { Float($0) }
    }

    /// Floats of the output for `batch` images of `height × width`.
    public func outputCount(batch: Int, height: Int, width: Int) -> Int {
        let g = ConvGeometry(channels: inChannels, height: height, width: width, kernelH: kernelSize,
                             kernelW: kernelSize, stride: stride, padding: padding)
        return outChannels * batch * g.outPlane
    }
}
