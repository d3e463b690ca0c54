/// Geometry of a 2-D convolution or pooling window over one image plane.
public struct ConvGeometry: Sendable, Equatable {
    public var channels: Int
    public var height: Int
    public var width: Int
    public var kernelH: Int
    public var kernelW: Int
    public var stride: Int
    public var padding: Int

    public init(channels: Int, height: Int, width: Int, kernelH: Int, kernelW: Int,
                stride: Int, padding: Int) {
        self.channels = channels
        self.height = height
        self.width = width
        self.kernelH = kernelH
        self.kernelW = kernelW
        self.stride = stride
        self.padding = padding
    }

    /// `(H + 2p − kh) / s + 1`.
    public var outHeight: Int { (height + 2 * padding - kernelH) / stride + 1 }
    /// `(W + 2p − kw) / s + 1`.
    public var outWidth: Int { (width + 2 * padding - kernelW) / stride + 1 }
    /// Rows of the column matrix: `C · kh · kw`.
    public var patchSize: Int { channels * kernelH * kernelW }
    public var outPlane: Int { outHeight * outWidth }
    public var inPlane: Int { height * width }
}

/// im2col for channel-major activations.
///
/// `x`: (C, N, H, W) with N = `batch`; images `first ..< first + count` are unrolled into
/// `col`: (C·kh·kw, count·Ho·Wo), row `(c·kh + i)·kw + j`, column `(n − first)·Ho·Wo + oh·Wo + ow`,
/// value `x[c, n, oh·s − p + i, ow·s − p + j]` or 0 outside the image.
public func im2col(
    _ x: UnsafePointer<Float>, batch: Int, first: Int, count: Int, geometry g: ConvGeometry,
    col: UnsafeMutablePointer<Float>, threads: Int = 1
) {
    let rows = g.patchSize
    let cols = count &* g.outPlane
    let work = rows &* cols
    let colP = SendablePointer(col)
    let xP = SendablePointer(UnsafeMutablePointer(mutating: x))
    parallelChunks(rows, chunks: work > 1 << 18 ? threads : 1) { range in
        for r in range {
            im2colRow(xP.pointer, batch: batch, first: first, count: count, g: g, row: r,
                      out: colP.pointer + r &* cols)
        }
    }
}

/// What one row of the column matrix reads: channel `c`, kernel offset (`i`, `j`), the valid
/// output columns `owLo ..< owHi` (0 ≤ ow·s − p + j < W) and, for "same" convolutions (stride 1,
/// output size = input size), the contiguous copy that serves a whole image at once.
private struct ColumnRow {
    let c: Int, i: Int, j: Int, owLo: Int, owHi: Int
    /// Stride 1 and Ho×Wo = H×W: output position q reads input q + `shift`.
    let isSame: Bool
    let shift: Int
    /// Output rows whose input row lies inside the image (same convolutions).
    let ohLo: Int, ohHi: Int

    @inline(__always)
    init(_ row: Int, _ g: ConvGeometry) {
        j = row % g.kernelW
        i = (row / g.kernelW) % g.kernelH
        c = row / (g.kernelW &* g.kernelH)
        let s = g.stride, p = g.padding
        owLo = max(0, (p - j + s - 1) / s)
        owHi = min(g.outWidth, (g.width - 1 + p - j) / s + 1)
        isSame = s == 1 && g.outHeight == g.height && g.outWidth == g.width
        shift = (i &- p) &* g.width &+ (j &- p)
        ohLo = min(g.outHeight, max(0, p &- i))
        ohHi = max(ohLo, min(g.outHeight, g.height &+ p &- i))
    }

    /// Same convolutions: sets the entries of output rows `ohLo ..< ohHi` of one image that
    /// come from outside the image (they would land on a neighbouring row) to zero.
    @inline(__always)
    func zeroOutsideColumns(_ image: UnsafeMutablePointer<Float>, _ g: ConvGeometry) {
        let wo = g.outWidth
        for oh in ohLo..<ohHi {
            let row = image + oh &* wo
            var ow = 0
            while ow < owLo { row[ow] = 0; ow &+= 1 }
            ow = owHi
            while ow < wo { row[ow] = 0; ow &+= 1 }
        }
    }

    /// Same convolutions: entry `ohLo·Wo + q` of one image's row pairs with `plane[start + q]`
    /// for q in `span`. The span stops at the plane's ends: the entries beyond are among the
    /// zeroed ones, and that memory belongs to other images (which other workers may write).
    @inline(__always)
    func contiguousSpan(_ g: ConvGeometry) -> (start: Int, span: Range<Int>) {
        let lo = ohLo &* g.outWidth, hi = ohHi &* g.outWidth
        let start = lo &+ shift
        let from = max(0, -start), to = min(hi &- lo, g.inPlane &- start)
        return (start, from..<max(from, to))
    }
}

@inline(__always)
private func im2colRow(
    _ x: UnsafeMutablePointer<Float>, batch: Int, first: Int, count: Int, g: ConvGeometry,
    row: Int, out: UnsafeMutablePointer<Float>
) {
    let r = ColumnRow(row, g)
    let ho = g.outHeight, wo = g.outWidth, h = g.height, w = g.width, s = g.stride, p = g.padding
    let owLo = r.owLo, owHi = r.owHi
    if r.isSame {
        // One contiguous copy per image, then zero what falls outside the image.
        let (start, span) = r.contiguousSpan(g)
        var o = out
        for n in first..<(first &+ count) {
            let src = x + (r.c &* batch &+ n) &* h &* w + start
            let dst = o + r.ohLo &* wo
            o.update(repeating: 0, count: r.ohLo &* wo)
            for q in span { dst[q] = src[q] }
            r.zeroOutsideColumns(o, g)
            (o + r.ohHi &* wo).update(repeating: 0, count: (ho &- r.ohHi) &* wo)
            o = o + ho &* wo
        }
        return
    }
    var o = out
    for n in first..<(first &+ count) {
        let plane = x + (r.c &* batch &+ n) &* h &* w
        for oh in 0..<ho {
            let ih = oh &* s &- p &+ r.i
            if ih < 0 || ih >= h || owLo >= owHi {
                o.update(repeating: 0, count: wo)
            } else {
                let src = plane + (ih &* w &- p &+ r.j)
                var ow = 0
                while ow < owLo { o[ow] = 0; ow &+= 1 }
                if s == 1 {
                    (o + owLo).update(from: src + owLo, count: owHi &- owLo)
                    ow = owHi
                } else {
                    while ow < owHi { o[ow] = src[ow &* s]; ow &+= 1 }
                }
                while ow < wo { o[ow] = 0; ow &+= 1 }
            }
            o = o + wo
        }
    }
}

/// col2im: the adjoint of `im2col`. Adds every entry of `col` into the position of `dx` it was
/// read from (`dx` must be zeroed by the caller for the images `first ..< first + count`).
/// Entries of `col` that im2col would have set to zero (padding) may be overwritten with zero.
public func col2im(
    _ col: UnsafeMutablePointer<Float>, batch: Int, first: Int, count: Int, geometry g: ConvGeometry,
    dx: UnsafeMutablePointer<Float>, threads: Int = 1
) {
    let cols = count &* g.outPlane
    let khkw = g.kernelH &* g.kernelW
    let dxP = SendablePointer(dx)
    let colP = SendablePointer(col)
    // Rows of one channel write the same planes: split the work by channel.
    parallelChunks(g.channels, chunks: g.patchSize &* cols > 1 << 18 ? threads : 1) { range in
        for c in range {
            for k in 0..<khkw {
                let row = c &* khkw &+ k
                col2imRow(colP.pointer + row &* cols, batch: batch, first: first, count: count,
                          g: g, row: row, dx: dxP.pointer)
            }
        }
    }
}

@inline(__always)
private func col2imRow(
    _ src: UnsafeMutablePointer<Float>, batch: Int, first: Int, count: Int, g: ConvGeometry,
    row: Int, dx: UnsafeMutablePointer<Float>
) {
    let r = ColumnRow(row, g)
    let ho = g.outHeight, wo = g.outWidth, h = g.height, w = g.width, s = g.stride, p = g.padding
    let owLo = r.owLo, owHi = r.owHi
    if r.isSame {
        // Zero the entries that came from outside the image, then one contiguous add per image.
        let (start, span) = r.contiguousSpan(g)
        var o = src
        for n in first..<(first &+ count) {
            r.zeroOutsideColumns(o, g)
            let dst = dx + (r.c &* batch &+ n) &* h &* w + start
            let from = o + r.ohLo &* wo
            for q in span { dst[q] += from[q] }
            o = o + ho &* wo
        }
        return
    }
    var o = src
    for n in first..<(first &+ count) {
        let plane = dx + (r.c &* batch &+ n) &* h &* w
        for oh in 0..<ho {
            let ih = oh &* s &- p &+ r.i
            if ih >= 0 && ih < h && owLo < owHi {
                let dst = plane + (ih &* w &- p &+ r.j)
                var ow = owLo
                if s == 1 {
                    while ow < owHi { dst[ow] += o[ow]; ow &+= 1 }
                } else {
                    while ow < owHi { dst[ow &* s] += o[ow]; ow &+= 1 }
                }
            }
            o = o + wo
        }
    }
}
