import Tensor

/// The dense passes of a 3×3, stride-1, padding-1 convolution on images of at most 2×2 pixels
/// as products over images. Every output pixel p sees every input pixel q through the tap
/// t(p, q) = (q_h − p_h + 1)·3 + (q_w − p_w + 1), so with P = H·W pixels the layer is the dense map
///
///     Y[n][(o, p)] = Σ_(c, q) X[n][(c, q)] · W'[(o, p)][(c, q)],   W'[(o, p)][(c, q)] = W[o][c][t(p, q)]
///
/// (activations image-major: `X[n][c·P + q]`), one GEMM of n × Cin·P by Cin·P × Cout·P: at 2×2
/// it does 16 of the 3×3 kernel's 36 products per channel pair and image (the other 20 fall on
/// the zero padding). The input gradient is `dY · W'`, the weight gradient `dW' = dYᵀ · X`
/// summed back onto the taps. W' is built by the forward pass and kept for the input gradient
/// (which builds it itself when this step's forward ran another way: a sparse or im2col pass).
extension Conv2d {
    /// Whether the dense passes over inputs of shape `s` run as the pixel product (`.automatic`
    /// only). `bench conv --shapes 512:512:2,256:256:2` (batch 128, 2 threads, forward +
    /// backward): 23.2 ms against 42.4 with the small-image kernel, 6.4 against 10.5.
    public func usesPixelProduct(_ s: Shape, _ ctx: Context) -> Bool {
        ctx.convolutionAlgorithm == .automatic && kernelSize == 3 && stride == 1 && padding == 1 && s.h <= 2 && s.w <= 2
    }

    /// tap[p·P + q] = t(p, q) for images `width` pixels wide with P pixels.
    private static func taps(pixels p: Int, width w: Int) -> [Int] {
        (0..<(p * p)).map { i in
            let po = i / p, q = i % p
            return (q / w - po / w + 1) * 3 + q % w - po % w + 1
        }
    }

    /// W' (`Cout·P × Cin·P`, row-major) into `pixelWeights` from the layer's weights for images
    /// of `h × w` pixels, output channels split among the workers.
    private func buildPixelWeights(height h: Int, width w: Int, _ ctx: Context) {
        pixelWeightsCurrent = true
        let p = h * w, cin = inChannels, cols = inChannels * p, tap = Self.taps(pixels: p, width: w)
        pixelWeights.reshape(Shape(n: outChannels * p, c: cols))
        let weights = SendablePointer(UnsafeMutablePointer(mutating: store.forwardWeight(weight)))
        let out = SendablePointer(pixelWeights.data)
        parallelChunks(outChannels, chunks: outChannels * cols * p >= 1 << 16 ? ctx.threads : 1) { range in
            for o in range {
                for po in 0..<p {
                    let row = out.pointer + (o * p + po) * cols, t = tap[(po * p)..<(po * p + p)]
                    for c in 0..<cin {
                        let k = weights.pointer + (o * cin + c) * 9, r = row + c * p
                        for (q, tq) in t.enumerated() { r[q] = k[tq] }
                    }
                }
            }
        }
    }

    /// `dst[n][c·P + q] = src[c][n][q]` (`channels` channels of `images` images of P pixels) or,
    /// with `inverse`, back.
    private func regroup(_ src: UnsafePointer<Float>, channels: Int, images: Int, pixels p: Int,
                         into dst: UnsafeMutablePointer<Float>, inverse: Bool) {
        for c in 0..<channels {
            for n in 0..<images {
                let channelMajor = (c * images + n) * p, imageMajor = (n * channels + c) * p
                for q in 0..<p {
                    if inverse { dst[channelMajor + q] = src[imageMajor + q] } else { dst[imageMajor + q] = src[channelMajor + q] }
                }
            }
        }
    }

    /// `out (images × m) = a (images × k) · B`, B = W' (`transposed`: W'ᵀ), the m columns split
    /// among the workers (each GEMM keeps all images: n = 128 rows run near peak, 64 did not).
    private func productOverImages(_ a: UnsafeMutablePointer<Float>, columns k: Int, transposed: Bool,
                                   into out: UnsafeMutablePointer<Float>, columns m: Int, images: Int, _ ctx: Context) {
        let ap = SendablePointer(a), wp = SendablePointer(pixelWeights.data), op = SendablePointer(out)
        parallelChunks(m, chunks: images * k * m >= 1 << 18 ? ctx.threads : 1) { range in
            let b = transposed ? wp.pointer + range.lowerBound * k : wp.pointer + range.lowerBound
            gemm(.none, transposed ? .transposed : .none, m: images, n: range.count, k: k, a: ap.pointer, lda: k,
                 b: b, ldb: transposed ? k : m, c: op.pointer + range.lowerBound, ldc: m)
        }
    }

    /// Forward: `output` (shaped by the caller) from `x`; builds W'.
    func pixelProductForward(_ x: Tensor, _ ctx: Context) {
        let s = x.shape, p = s.h * s.w, rows = inChannels * p, cols = outChannels * p
        buildPixelWeights(height: s.h, width: s.w, ctx)
        imageMajorInput.reshape(Shape(n: s.n, c: rows))
        imageMajorOutput.reshape(Shape(n: s.n, c: cols))
        regroup(x.data, channels: inChannels, images: s.n, pixels: p, into: imageMajorInput.data, inverse: false)
        productOverImages(imageMajorInput.data, columns: rows, transposed: true, into: imageMajorOutput.data,
                          columns: cols, images: s.n, ctx)
        regroup(imageMajorOutput.data, channels: outChannels, images: s.n, pixels: p, into: output.data, inverse: true)
    }

    /// Input gradient: `dx` (channel-major, overwritten) from `dy`, with the forward pass's W'.
    func pixelProductInputGradient(_ dy: Tensor, into dx: UnsafeMutablePointer<Float>, inputShape s: Shape, _ ctx: Context) {
        let p = s.h * s.w, rows = inChannels * p, cols = outChannels * p
        if !pixelWeightsCurrent { buildPixelWeights(height: s.h, width: s.w, ctx) }
        imageMajorOutput.reshape(Shape(n: s.n, c: cols))
        imageMajorInput.reshape(Shape(n: s.n, c: rows))
        regroup(dy.data, channels: outChannels, images: s.n, pixels: p, into: imageMajorOutput.data, inverse: false)
        productOverImages(imageMajorOutput.data, columns: cols, transposed: false, into: imageMajorInput.data,
                          columns: rows, images: s.n, ctx)
        regroup(imageMajorInput.data, channels: inChannels, images: s.n, pixels: p, into: dx, inverse: true)
    }

    /// Weight gradient: `target[o][c][t] += Σ_{(p, q): t(p, q) = t} dW'[(o, p)][(c, q)]`, `dW' = dYᵀ·X`.
    func pixelProductWeightGradient(_ x: Tensor, _ dy: Tensor, into target: UnsafeMutablePointer<Float>, _ ctx: Context) {
        let s = x.shape, p = s.h * s.w, rows = inChannels * p, cols = outChannels * p, cin = inChannels
        let tap = Self.taps(pixels: p, width: s.w)
        imageMajorInput.reshape(Shape(n: s.n, c: rows))
        imageMajorOutput.reshape(Shape(n: s.n, c: cols))
        regroup(x.data, channels: inChannels, images: s.n, pixels: p, into: imageMajorInput.data, inverse: false)
        regroup(dy.data, channels: outChannels, images: s.n, pixels: p, into: imageMajorOutput.data, inverse: false)
        let xp = SendablePointer(imageMajorInput.data), dp = SendablePointer(imageMajorOutput.data)
        let dw = SendablePointer(ctx.packedWeightScratch(count: rows * cols)), tp = SendablePointer(target)
        let images = s.n, work = images * rows * cols >= 1 << 18 ? ctx.threads : 1
        // Rows of dW' (o, p) per worker: whole output channels, folded by the same worker.
        parallelChunks(outChannels, chunks: work) { range in
            let r0 = range.lowerBound * p, r1 = range.upperBound * p
            gemm(.transposed, .none, m: r1 - r0, n: rows, k: images, a: dp.pointer + r0, lda: cols,
                 b: xp.pointer, ldb: rows, c: dw.pointer + r0 * rows, ldc: rows)
            for o in range {
                for po in 0..<p {
                    let row = dw.pointer + (o * p + po) * rows, t = tap[(po * p)..<(po * p + p)]
                    for c in 0..<cin {
                        let k = tp.pointer + (o * cin + c) * 9, r = row + c * p
                        for (q, tq) in t.enumerated() { k[tq] += r[q] }
                    }
                }
            }
        }
    }
}
