import Tensor

/// Max pooling with a square window; padding counts as −∞. Backward routes each output
/// gradient to the input position that won (first one on ties, as PyTorch).
public final class MaxPool2d: Layer {
    public let kernelSize: Int, stride: Int, padding: Int
    private let output = Tensor()
    private var argmax: [Int32] = []
    private(set) var inputShape = Shape(n: 0, c: 0)

    public init(kernelSize: Int, stride: Int? = nil, padding: Int = 0) {
        self.kernelSize = kernelSize
        self.stride = stride ?? kernelSize
        self.padding = padding
    }

    func geometry(_ s: Shape) -> ConvGeometry {
        ConvGeometry(channels: s.c, height: s.h, width: s.w, kernelH: kernelSize, kernelW: kernelSize,
                     stride: stride, padding: padding)
    }

    public func outputShape(for s: Shape) throws -> Shape {
        let g = geometry(s)
        guard 2 * padding <= kernelSize else {
            throw ModelError("max pooling padding \(padding) is more than half its \(kernelSize)×\(kernelSize) window")
        }
        guard g.outHeight > 0, g.outWidth > 0 else {
            throw ModelError("input \(s.h)×\(s.w) is too small for \(kernelSize)×\(kernelSize) max pooling")
        }
        return Shape(n: s.n, c: s.c, h: g.outHeight, w: g.outWidth)
    }

    /// 2×2 windows with stride 2 and no padding tile an even-sized plane exactly.
    private func isTiling2x2(_ s: Shape) -> Bool {
        kernelSize == 2 && stride == 2 && padding == 0 && s.h % 2 == 0 && s.w % 2 == 0
    }

    public func forward(_ x: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.pool) {
            let s = x.shape
            let (ho, wo) = prepareOutput(for: s)
            let planes = s.c * s.n
            if isTiling2x2(s) {
                argmax.withUnsafeMutableBufferPointer { am in
                    let xp = SendablePointer(x.data), yp = SendablePointer(output.data)
                    let ip = SendablePointer(am.baseAddress!)
                    parallelChunks(planes, chunks: ctx.chunks(for: s.count)) { range in
                        for pl in range {
                            maxPool2x2Plane(xp.pointer + pl * s.plane, h: s.h, w: s.w,
                                            out: yp.pointer + pl * ho * wo, index: ip.pointer + pl * ho * wo)
                        }
                    }
                }
                return output
            }
            let k = kernelSize, st = stride, pad = padding
            argmax.withUnsafeMutableBufferPointer { am in
                let xp = SendablePointer(x.data), yp = SendablePointer(output.data)
                let ip = SendablePointer(am.baseAddress!)
                parallelChunks(planes, chunks: ctx.chunks(for: s.count)) { range in
                    for pl in range {
                        maxPoolPlane(xp.pointer + pl * s.plane, h: s.h, w: s.w, kernel: k, stride: st, padding: pad,
                                     out: yp.pointer + pl * ho * wo, ho: ho, wo: wo, index: ip.pointer + pl * ho * wo)
                    }
                }
            }
            return output
        }
    }

    /// Records the input shape, sizes the output and the winners' indices; the output's Ho, Wo.
    private func prepareOutput(for s: Shape) -> (Int, Int) {
        let g = geometry(s)
        inputShape = s
        output.reshape(Shape(n: s.n, c: s.c, h: g.outHeight, w: g.outWidth))
        if argmax.count < output.count { argmax = Array(repeating: 0, count: output.count) }
        return (g.outHeight, g.outWidth)
    }

    /// Whether this pooling takes `bn`'s output in `forward(normalizing:by:_:)` for inputs of
    /// shape `s`: 2×2 windows tiling the planes, after a batch norm with its ReLU.
    func fuses(after bn: BatchNorm, _ s: Shape) -> Bool { bn.relu && isTiling2x2(s) }

    /// `pool(relu(BN(x)))` without the batch norm's output: each channel's windows are pooled
    /// from its affine map as the batch norm produces it (the same values and winners as the two
    /// layers apart; the pass counts as batch norm). Backward: this layer's, then the batch norm's,
    /// which reads x.
    func forward(normalizing x: Tensor, by bn: BatchNorm, _ ctx: Context) -> Tensor {
        precondition(fuses(after: bn, x.shape), "max pooling fuses 2×2 tiling windows after a batch norm with its ReLU")
        let s = x.shape
        let (ho, wo) = prepareOutput(for: s)
        argmax.withUnsafeMutableBufferPointer { am in
            let xp = SendablePointer(x.data), yp = SendablePointer(output.data), ip = SendablePointer(am.baseAddress!)
            let images = s.n, plane = s.plane, pooled = ho * wo, h = s.h, w = s.w
            bn.forward(x, ctx) { c, scale, shift in
                for image in 0..<images {
                    let pl = c * images + image
                    maxPool2x2Plane(xp.pointer + pl * plane, h: h, w: w, out: yp.pointer + pl * pooled,
                                    index: ip.pointer + pl * pooled, affine: (scale, shift))
                }
            }
        }
        return output
    }

    /// The gradient of plane `pl` (channel · N + image) of a 2×2 tiling pooling's input (shape
    /// `s`) from its output's gradient `dy` and `winners`: each input gets its window's gradient
    /// where it won, else 0.
    private static func expand2x2(_ dy: UnsafePointer<Float>, winners: UnsafePointer<Int32>, shape s: Shape, plane pl: Int,
                                  into dst: UnsafeMutablePointer<Float>) {
        let ho = s.h / 2, wo = s.w / 2
        let d = dy + pl * ho * wo, idx = winners + pl * ho * wo
        for oh in 0..<ho {
            var ow = 0
            // Eight outputs at a time; even and odd columns interleaved.
            while ow + 8 <= wo {
                let k = oh * wo + ow
                let v = UnsafeRawPointer(d + k).loadUnaligned(as: SIMD8<Float>.self)
                let winner = UnsafeRawPointer(idx + k).loadUnaligned(as: SIMD8<Int32>.self)
                let base = SIMD8<Int32>(repeating: Int32(2 * oh * s.w + 2 * ow)) &+ poolLanes
                @inline(__always) func row(_ r: Int) {
                    let first = base &+ Int32(r * s.w)
                    var pair = SIMD16<Float>()
                    pair.evenHalf = SIMD8(repeating: 0).replacing(with: v, where: winner .== first)
                    pair.oddHalf = SIMD8(repeating: 0).replacing(with: v, where: winner .== first &+ 1)
                    UnsafeMutableRawPointer(dst + (2 * oh + r) * s.w + 2 * ow).storeBytes(of: pair, as: SIMD16<Float>.self)
                }
                row(0)
                row(1)
                ow += 8
            }
            for ow in ow..<wo {
                let k = oh * wo + ow, at = Int(idx[k])
                let base = 2 * oh * s.w + 2 * ow
                let v = d[k]
                dst[base] = at == base ? v : 0
                dst[base + 1] = at == base + 1 ? v : 0
                dst[base + s.w] = at == base + s.w ? v : 0
                dst[base + s.w + 1] = at == base + s.w + 1 ? v : 0
            }
        }
    }

    /// The backward pass of `forward(normalizing:by:_:)`: the batch norm's, with each channel's
    /// gradient expanded from this layer's `dy` into the batch norm's per-worker scratch (in
    /// cache) as it reads it — the full-size gradient between the two is never written. The
    /// same values as the two layers' backward passes apart.
    func backward(_ dy: Tensor, throughNormalization bn: BatchNorm, _ ctx: Context) -> Tensor {
        defer { ctx.release(dy) }
        let s = inputShape
        return argmax.withUnsafeBufferPointer { am in
            let dp = SendablePointer(dy.data), ip = SendablePointer(UnsafeMutablePointer(mutating: am.baseAddress!))
            return bn.backward(ctx, usesScratch: true) { c, scratch in
                for image in 0..<s.n {
                    Self.expand2x2(dp.pointer, winners: ip.pointer, shape: s, plane: c * s.n + image, into: scratch + image * s.plane)
                }
                return UnsafePointer(scratch)
            }
        }
    }

    public func backward(_ dy: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.pool) {
            let s = inputShape
            let inputGradient = ctx.gradientBuffer(s)
            defer { ctx.release(dy) }
            if isTiling2x2(s) {
                // Every input belongs to exactly one window: write all four, no zeroing pass.
                argmax.withUnsafeBufferPointer { am in
                    let dp = SendablePointer(dy.data), gp = SendablePointer(inputGradient.data)
                    let ip = SendablePointer(UnsafeMutablePointer(mutating: am.baseAddress!))
                    parallelChunks(s.c * s.n, chunks: ctx.chunks(for: s.count)) { range in
                        for pl in range {
                            Self.expand2x2(dp.pointer, winners: ip.pointer, shape: s, plane: pl, into: gp.pointer + pl * s.plane)
                        }
                    }
                }
                return inputGradient
            }
            let outPlane = dy.shape.plane, plane = s.plane
            argmax.withUnsafeBufferPointer { am in
                let dp = SendablePointer(dy.data), gp = SendablePointer(inputGradient.data)
                let ip = SendablePointer(UnsafeMutablePointer(mutating: am.baseAddress!))
                parallelChunks(s.c * s.n, chunks: ctx.chunks(for: s.count)) { range in
                    for pl in range {
                        let d = dp.pointer + pl * outPlane, idx = ip.pointer + pl * outPlane
                        let dst = gp.pointer + pl * plane
                        dst.update(repeating: 0, count: plane)
                        for k in 0..<outPlane { dst[Int(idx[k])] += d[k] }
                    }
                }
            }
            return inputGradient
        }
    }
}

/// k×k max pooling of one plane with stride and padding (padding never wins); `index` gets the
/// winner's offset in the plane, the first of ties in row-major window order. Each window's rows
/// and columns are clamped to the plane once, so the inner loops test nothing but the values.
@inline(__always)
private func maxPoolPlane(
    _ x: UnsafeMutablePointer<Float>, h: Int, w: Int, kernel: Int, stride: Int, padding: Int,
    out: UnsafeMutablePointer<Float>, ho: Int, wo: Int, index: UnsafeMutablePointer<Int32>
) {
    for oh in 0..<ho {
        let top = oh * stride - padding
        let i0 = max(top, 0), i1 = min(top + kernel, h)
        for ow in 0..<wo {
            let left = ow * stride - padding
            let j0 = max(left, 0), j1 = min(left + kernel, w)
            var at = i0 * w + j0, best = x[at]
            for i in i0..<i1 {
                let row = i * w
                for j in j0..<j1 where x[row + j] > best {
                    best = x[row + j]
                    at = row + j
                }
            }
            out[oh * wo + ow] = best
            index[oh * wo + ow] = Int32(at)
        }
    }
}

/// Offsets of the first inputs of eight neighbouring 2×2 windows in a row: 0, 2, …, 14.
private let poolLanes = SIMD8<Int32>(0, 2, 4, 6, 8, 10, 12, 14)

/// 2×2 stride-2 max over one plane; `index` gets the winner's offset in the plane (first of
/// ties in row-major window order, as the general path).
@inline(__always)
private func maxPool2x2Plane(
    _ x: UnsafeMutablePointer<Float>, h: Int, w: Int, out: UnsafeMutablePointer<Float>,
    index: UnsafeMutablePointer<Int32>, affine: (scale: Float, shift: Float)? = nil
) {
    let wo = w / 2
    // With `affine`, each input is first max(x·scale + shift, 0) (0 also for NaN), as
    // `reluAffine` computes a batch norm's output: the same values, so the same winners.
    let vScale = SIMD16<Float>(repeating: affine?.scale ?? 1), vShift = SIMD16<Float>(repeating: affine?.shift ?? 0)
    @inline(__always) func input(_ v: SIMD16<Float>) -> SIMD16<Float> {
        guard affine != nil else { return v }
        let z = v * vScale + vShift
        return z.replacing(with: 0, where: .!(z .> 0))
    }
    @inline(__always) func input(_ v: Float) -> Float {
        guard let a = affine else { return v }
        let z = v * a.scale + a.shift
        return z > 0 ? z : 0
    }
    // Lane j of a block of 8 outputs starting at output column ow reads plane offsets
    // base + {0, 1, w, w + 1} with base = 2·oh·w + 2·(ow + j).
    for oh in 0..<(h / 2) {
        let r0 = x + 2 * oh * w
        var ow = 0
        // Eight outputs at a time: even and odd columns of two rows, strict > so the first of
        // ties in window order wins, as below.
        while ow + 8 <= wo {
            let top = input(UnsafeRawPointer(r0 + 2 * ow).loadUnaligned(as: SIMD16<Float>.self))
            let bottom = input(UnsafeRawPointer(r0 + w + 2 * ow).loadUnaligned(as: SIMD16<Float>.self))
            let base = SIMD8<Int32>(repeating: Int32(2 * oh * w + 2 * ow)) &+ poolLanes
            var best = top.evenHalf, at = base
            @inline(__always) func challenge(_ v: SIMD8<Float>, _ shift: Int) {
                let better = v .> best
                best.replace(with: v, where: better)
                at.replace(with: base &+ Int32(shift), where: better)
            }
            challenge(top.oddHalf, 1)
            challenge(bottom.evenHalf, w)
            challenge(bottom.oddHalf, w + 1)
            UnsafeMutableRawPointer(out + oh * wo + ow).storeBytes(of: best, as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(index + oh * wo + ow).storeBytes(of: at, as: SIMD8<Int32>.self)
            ow += 8
        }
        for ow in ow..<wo {
            let base = 2 * oh * w + 2 * ow
            let a = input(r0[2 * ow]), b = input(r0[2 * ow + 1]), c = input(r0[w + 2 * ow]), d = input(r0[w + 2 * ow + 1])
            var best = a, at = base
            if b > best { best = b; at = base + 1 }
            if c > best { best = c; at = base + w }
            if d > best { best = d; at = base + w + 1 }
            out[oh * wo + ow] = best
            index[oh * wo + ow] = Int32(at)
        }
    }
}

/// Average pooling with a square window, no padding. `kernelSize = 0` pools the whole plane
/// (global average pooling) whatever its size.
public final class AvgPool2d: Layer {
    public let kernelSize: Int, stride: Int
    private let output = Tensor()
    private var inputShape = Shape(n: 0, c: 0)

    public init(kernelSize: Int, stride: Int? = nil) {
        self.kernelSize = kernelSize
        self.stride = stride ?? kernelSize
    }

    /// Global average pooling: (C, N, H, W) → (C, N, 1, 1).
    public static func global() -> AvgPool2d { AvgPool2d(kernelSize: 0) }

    private func window(_ s: Shape) -> (kh: Int, kw: Int, sh: Int, sw: Int) {
        kernelSize == 0 ? (s.h, s.w, s.h, s.w) : (kernelSize, kernelSize, stride, stride)
    }

    public func outputShape(for s: Shape) throws -> Shape {
        let (kh, kw, sh, sw) = window(s)
        guard s.h >= kh, s.w >= kw, s.h > 0, s.w > 0 else {
            throw ModelError("input \(s.h)×\(s.w) is too small for \(kh)×\(kw) average pooling")
        }
        return Shape(n: s.n, c: s.c, h: (s.h - kh) / sh + 1, w: (s.w - kw) / sw + 1)
    }

    public func forward(_ x: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.pool) {
            let s = x.shape
            inputShape = s
            let (kh, kw, sh, sw) = window(s)
            let ho = (s.h - kh) / sh + 1, wo = (s.w - kw) / sw + 1
            output.reshape(Shape(n: s.n, c: s.c, h: ho, w: wo))
            let scale = 1 / Float(kh * kw)
            for pl in 0..<(s.c * s.n) {
                let src = x.data + pl * s.plane
                let dst = output.data + pl * ho * wo
                if ho == 1 && wo == 1 && kh == s.h && kw == s.w {
                    dst[0] = sum(src, s.plane) * scale
                    continue
                }
                for oh in 0..<ho {
                    for ow in 0..<wo {
                        var acc: Float = 0
                        for i in 0..<kh { for j in 0..<kw { acc += src[(oh * sh + i) * s.w + ow * sw + j] } }
                        dst[oh * wo + ow] = acc * scale
                    }
                }
            }
            return output
        }
    }

    public func backward(_ dy: Tensor, _ ctx: Context) -> Tensor {
        ctx.timed(.pool) {
            let s = inputShape
            let (kh, kw, sh, sw) = window(s)
            let ho = dy.shape.h, wo = dy.shape.w
            let inputGradient = ctx.gradientBuffer(s)
            defer { ctx.release(dy) }
            inputGradient.zero()
            let scale = 1 / Float(kh * kw)
            for pl in 0..<(s.c * s.n) {
                let d = dy.data + pl * ho * wo
                let dst = inputGradient.data + pl * s.plane
                for oh in 0..<ho {
                    for ow in 0..<wo {
                        let g = d[oh * wo + ow] * scale
                        for i in 0..<kh { for j in 0..<kw { dst[(oh * sh + i) * s.w + ow * sw + j] += g } }
                    }
                }
            }
            return inputGradient
        }
    }
}
