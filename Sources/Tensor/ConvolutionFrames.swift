/// The layouts in which a k×k, stride-s, padding-p convolution becomes a sparse matrix product
/// over **contiguous positions**, so the sparse kernels read activations with unit stride and
/// every weight entry is one element offset ("source") into a frame.
///
/// - Forward frame (input side): the zero-padded input split into `phaseSide²` phase planes
///   (`phaseSide = min(s, k)`), plane (a, b) holding padded pixels (s·i + a, s·j + b), each plane
///   `batch × rows × cols` with `rows = Ho + shift`, `cols = Wo + shift`, `shift = ⌊(k−1)/s⌋`.
///   Layout `[C][plane][N][rows][cols]`. Output pixel (n, i, j) is position
///   `p = (n·rows + i)·cols + j`, and tap (c, kh, kw) reads `p + c·channelStride +
///   plane(kh mod s, kw mod s)·planeStride + ⌊kh/s⌋·cols + ⌊kw/s⌋`. Positions with i ≥ Ho or
///   j ≥ Wo are computed and dropped; the output gradient laid out in this frame (zero there)
///   gives the weight gradient as a sampled product.
/// - Gradient frame (output side, for dX): dY shifted by `shift` rows and columns into
///   `[Cout][N][gradientRows][gradientCols]`, zero around. dX pixel (s·i + a − p, s·j + b − p)
///   is position (n, i, j) of phase (a, b), which gathers the taps kh ≡ a, kw ≡ b (mod s) at
///   offsets `o·gradientPlane + (shift − ⌊kh/s⌋)·gradientCols + shift − ⌊kw/s⌋`.
///
/// Position counts stop where the largest tap offset would leave a plane; every valid pixel is
/// below them.
public struct ConvolutionFrames: Equatable, Sendable {
    public let geometry: ConvGeometry
    public let batch: Int
    public let phaseSide: Int, shift: Int
    public let rows: Int, cols: Int
    public let gradientRows: Int, gradientCols: Int

    public init(_ g: ConvGeometry, batch: Int) {
        precondition(g.kernelH == g.kernelW, "square kernels only")
        geometry = g
        self.batch = batch
        let k = g.kernelH, s = g.stride
        phaseSide = min(s, k)
        shift = (k - 1) / s
        rows = g.outHeight + shift
        cols = g.outWidth + shift
        gradientRows = max(shift + g.outHeight, (g.height - 1 + g.padding) / s + shift + 1)
        gradientCols = max(shift + g.outWidth, (g.width - 1 + g.padding) / s + shift + 1)
    }

    public var planes: Int { phaseSide * phaseSide }
    public var planeStride: Int { batch * rows * cols }
    public var channelStride: Int { planes * planeStride }
    public var forwardPositions: Int { planeStride - (shift * cols + shift) }
    public var gradientPlane: Int { batch * gradientRows * gradientCols }
    public var gradientPositions: Int { gradientPlane - (shift * gradientCols + shift) }
    /// Floats of the forward frame of `channels` channels.
    public var inputCount: Int { geometry.channels * channelStride }

    /// Forward-frame offset of weight column `t = c·k² + kh·k + kw`.
    public func forwardSource(column t: Int) -> Int {
        let k = geometry.kernelH, s = geometry.stride
        let c = t / (k * k), kh = t % (k * k) / k, kw = t % k
        return c * channelStride + ((kh % s) * phaseSide + kw % s) * planeStride + (kh / s) * cols + kw / s
    }

    /// Gradient-frame offset of output channel `o` at tap (kh, kw).
    public func gradientSource(outChannel o: Int, kh: Int, kw: Int) -> Int {
        let s = geometry.stride
        return o * gradientPlane + (shift - kh / s) * gradientCols + shift - kw / s
    }

    /// Position chunks of whole frame rows (`width` positions each), about `target` positions
    /// long: `(first, count)` over `0 ..< total`.
    public static func chunks(total: Int, width: Int, target: Int) -> [(Int, Int)] {
        let step = max(1, target / max(width, 1)) * max(width, 1)
        return Swift.stride(from: 0, to: total, by: step).map { ($0, min(step, total - $0)) }
    }

    /// Writes the forward frame of x (`[C][N][H][W]`): every plane, padding and unused tail
    /// positions zero. Parallel over channels.
    public func packInput(_ x: UnsafePointer<Float>, into frame: UnsafeMutablePointer<Float>, threads: Int) {
        let g = geometry, n = batch, rows = rows, cols = cols, side = phaseSide, s = g.stride, p = g.padding
        let xs = SendablePointer(UnsafeMutablePointer(mutating: x)), fs = SendablePointer(frame)
        let cs = channelStride, ps = planeStride, plane = g.height * g.width
        parallelChunks(g.channels, chunks: cs * g.channels > 1 << 16 ? threads : 1) { range in
            for c in range {
                for a in 0..<side {
                    for b in 0..<side {
                        let dst0 = fs.pointer + c * cs + (a * side + b) * ps
                        for img in 0..<n {
                            let src = xs.pointer + (c * n + img) * plane
                            for i in 0..<rows {
                                let row = dst0 + (img * rows + i) * cols, ih = s * i + a - p
                                guard ih >= 0, ih < g.height else {
                                    row.update(repeating: 0, count: cols)
                                    continue
                                }
                                let line = src + ih * g.width
                                for j in 0..<cols {
                                    let iw = s * j + b - p
                                    row[j] = iw >= 0 && iw < g.width ? line[iw] : 0
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Writes `[channels][N][Ho][Wo]` activations into a `[channels][N][frameRows][frameCols]`
    /// frame at row and column offset `at`, zero elsewhere (the output gradient in the forward
    /// frame with `at = 0`, or in the gradient frame with `at = shift`).
    public func place(
        _ y: UnsafePointer<Float>, channels: Int, frameRows: Int, frameCols: Int, at shift: Int,
        into frame: UnsafeMutablePointer<Float>, threads: Int
    ) {
        let ho = geometry.outHeight, wo = geometry.outWidth, n = batch
        let ys = SendablePointer(UnsafeMutablePointer(mutating: y)), fs = SendablePointer(frame)
        let planeSize = n * frameRows * frameCols
        parallelChunks(channels, chunks: planeSize * channels > 1 << 16 ? threads : 1) { range in
            for c in range {
                let dst = fs.pointer + c * planeSize
                dst.update(repeating: 0, count: planeSize)
                for img in 0..<n {
                    for i in 0..<ho {
                        (dst + (img * frameRows + i + shift) * frameCols + shift)
                            .update(from: ys.pointer + ((c * n + img) * ho + i) * wo, count: wo)
                    }
                }
            }
        }
    }

    /// Copies the valid pixels of a chunk of forward positions (`chunk[r·count + q]` for position
    /// `first + q`, row-aligned `first`) into `y[r][N][Ho][Wo]`.
    public func storeOutput(
        _ chunk: UnsafePointer<Float>, channels: Int, first: Int, count: Int, into y: UnsafeMutablePointer<Float>
    ) {
        let ho = geometry.outHeight, wo = geometry.outWidth, plane = ho * wo, ldy = batch * plane
        var p = first
        while p < first + count {
            let img = p / (rows * cols), i = p / cols % rows
            if i < ho {
                let n = min(wo, first + count - p)
                for r in 0..<channels {
                    (y + r * ldy + img * plane + i * wo).update(from: chunk + r * count + (p - first), count: n)
                }
            }
            p += cols
        }
    }

    /// Copies a chunk of phase (a, b) gradient positions into the valid pixels
    /// (s·i + a − p, s·j + b − p) of `dx[r][N][H][W]`.
    public func storeInputGradient(
        _ chunk: UnsafePointer<Float>, channels: Int, phase a: Int, _ b: Int, first: Int, count: Int,
        into dx: UnsafeMutablePointer<Float>
    ) {
        let g = geometry, s = g.stride, pad = g.padding, plane = g.height * g.width, ldx = batch * plane
        let gr = gradientRows, gc = gradientCols
        var jLo = 0
        while s * jLo + b - pad < 0 { jLo += 1 }
        var jHi = jLo
        while jHi < gc && s * jHi + b - pad < g.width { jHi += 1 }
        var p = first
        while p < first + count {
            let img = p / (gr * gc), i = p / gc % gr, ih = s * i + a - pad
            if ih >= 0 && ih < g.height {
                let hi = min(jHi, first + count - p)
                for r in 0..<channels where jLo < hi {
                    let src = chunk + r * count + (p - first), dst = dx + r * ldx + img * plane + ih * g.width
                    if s == 1 {
                        (dst + jLo + b - pad).update(from: src + jLo, count: hi - jLo)
                    } else {
                        for j in jLo..<hi { dst[s * j + b - pad] = src[j] }
                    }
                }
            }
            p += gc
        }
    }
}
