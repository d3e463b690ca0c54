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

@inline(__always)
private func im2colRow(
    _ x: UnsafeMutablePointer<Float>, batch: Int, first: Int, count: Int, g: ConvGeometry,
    row: Int, out: UnsafeMutablePointer<Float>
) {
    let j = row % g.kernelW
    let i = (row / g.kernelW) % g.kernelH
    let c = row / (g.kernelW &* g.kernelH)
    let ho = g.outHeight, wo = g.outWidth, h = g.height, w = g.width, s = g.stride, p = g.padding
    // Valid ow range: 0 <= ow*s - p + j < w.
    let owLo = max(0, (p - j + s - 1) / s)
    let owHi = min(wo, (w - 1 + p - j) / s + 1)
    if s == 1 && ho == h && wo == w {
        // "Same" convolution: output position q reads input q + shift; one contiguous copy
        // per image, then zero the rows and columns that fall outside the image.
        let shift = (i &- p) &* w &+ (j &- p)
        let ohLo = max(0, p &- i), ohHi = min(ho, h &+ p &- i)
        var o = out
        for n in first..<(first &+ count) {
            let plane = x + (c &* batch &+ n) &* h &* w
            o.update(repeating: 0, count: ohLo &* wo)
            let lo = ohLo &* wo, hi = ohHi &* wo
            if hi > lo {
                // Only inside this plane: the entries that would be read from before or after it
                // are among those zeroed below.
                let start = lo &+ shift
                let src = plane + start
                var q = max(0, -start)
                let end = min(hi &- lo, h &* w &- start)
                let dst = o + lo
                while q < end { dst[q] = src[q]; q &+= 1 }
                for oh in ohLo..<ohHi {
                    let row = o + oh &* wo
                    var ow = 0
                    while ow < owLo { row[ow] = 0; ow &+= 1 }
                    ow = owHi
                    while ow < wo { row[ow] = 0; ow &+= 1 }
                }
            }
            (o + hi).update(repeating: 0, count: (ho &- ohHi) &* wo)
            o = o + ho &* wo
        }
        return
    }
    var o = out
    for n in first..<(first &+ count) {
        let plane = x + (c &* batch &+ n) &* h &* w
        for oh in 0..<ho {
            let ih = oh &* s &- p &+ i
            if ih < 0 || ih >= h || owLo >= owHi {
                o.update(repeating: 0, count: wo)
            } else {
                let src = plane + (ih &* w &- p &+ j)
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
    let j = row % g.kernelW
    let i = (row / g.kernelW) % g.kernelH
    let c = row / (g.kernelW &* g.kernelH)
    let ho = g.outHeight, wo = g.outWidth, h = g.height, w = g.width, s = g.stride, p = g.padding
    let owLo = max(0, (p - j + s - 1) / s)
    let owHi = min(wo, (w - 1 + p - j) / s + 1)
    if s == 1 && ho == h && wo == w {
        // "Same" convolution: zero the entries that came from outside the image (they would
        // land on a neighbouring row), then one contiguous add per image.
        let shift = (i &- p) &* w &+ (j &- p)
        let ohLo = max(0, p &- i), ohHi = min(ho, h &+ p &- i)
        var o = src
        for n in first..<(first &+ count) {
            let plane = dx + (c &* batch &+ n) &* h &* w
            for oh in ohLo..<ohHi {
                let row = o + oh &* wo
                var ow = 0
                while ow < owLo { row[ow] = 0; ow &+= 1 }
                ow = owHi
                while ow < wo { row[ow] = 0; ow &+= 1 }
            }
            // Entries that would land before or after this image's plane are zeroed ones; they
            // are skipped, not added: that memory belongs to another image, which another
            // worker may be writing at the same time.
            let lo = ohLo &* wo, hi = ohHi &* wo
            let start = lo &+ shift
            var q = max(0, -start)
            let end = min(hi &- lo, h &* w &- start)
            let dst = plane + start
            let from = o + lo
            while q < end { dst[q] += from[q]; q &+= 1 }
            o = o + ho &* wo
        }
        return
    }
    var o = src
    for n in first..<(first &+ count) {
        let plane = dx + (c &* batch &+ n) &* h &* w
        for oh in 0..<ho {
            let ih = oh &* s &- p &+ i
            if ih >= 0 && ih < h && owLo < owHi {
                let dst = plane + (ih &* w &- p &+ j)
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
