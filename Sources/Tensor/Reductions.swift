/// Vectorised reductions (the compiler does not vectorise float sums by itself).

/// `Σ x[i]`, with SIMD16 partial sums.
public func sum(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD16<Float>()
    var i = 0
    let raw = UnsafeRawPointer(x)
    while i &+ 16 <= n {
        acc += raw.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
        i &+= 16
    }
    var s = acc.sum()
    while i < n { s += x[i]; i &+= 1 }
    return s
}

/// `Σ x[i]·y[i]`.
public func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD16<Float>()
    var i = 0
    let rx = UnsafeRawPointer(x), ry = UnsafeRawPointer(y)
    while i &+ 16 <= n {
        acc += rx.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
            * ry.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
        i &+= 16
    }
    var s = acc.sum()
    while i < n { s += x[i] * y[i]; i &+= 1 }
    return s
}

/// `(Σ x[i], Σ x[i]·y[i])` in one pass over `x`, with the same partial sums as `sum` and `dot`
/// (so the same results, bit for bit).
public func sumAndDot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, _ n: Int) -> (sum: Float, dot: Float) {
    var accSum = SIMD16<Float>(), accDot = SIMD16<Float>()
    var i = 0
    let rx = UnsafeRawPointer(x), ry = UnsafeRawPointer(y)
    while i &+ 16 <= n {
        let a = rx.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
        accSum += a
        accDot += a * ry.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
        i &+= 16
    }
    var s = accSum.sum(), d = accDot.sum()
    while i < n { s += x[i]; d += x[i] * y[i]; i &+= 1 }
    return (s, d)
}

/// `Σ (x[i] − mean)²`.
public func sumSquaredDeviations(_ x: UnsafePointer<Float>, _ n: Int, mean: Float) -> Float {
    var acc = SIMD16<Float>()
    let m = SIMD16<Float>(repeating: mean)
    var i = 0
    let rx = UnsafeRawPointer(x)
    while i &+ 16 <= n {
        let d = rx.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self) - m
        acc += d * d
        i &+= 16
    }
    var s = acc.sum()
    while i < n { let d = x[i] - mean; s += d * d; i &+= 1 }
    return s
}

/// `(Σ g[i], Σ g[i]·x[i])` with `g[i] = d[i]` where `x[i]·scale + shift > 0`, else 0: the sums of
/// `sumAndDot(d, x)` over the entries that a ReLU after the affine map `x·scale + shift` lets
/// through (the backward of batch norm fused with ReLU). The gate is the same expression, not
/// fused into one rounding, as `reluAffine` computes.
public func gatedSumAndDot(_ d: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int,
                           scale: Float, shift: Float) -> (sum: Float, dot: Float) {
    var accSum = SIMD16<Float>(), accDot = SIMD16<Float>()
    let vScale = SIMD16<Float>(repeating: scale), vShift = SIMD16<Float>(repeating: shift)
    var i = 0
    let rd = UnsafeRawPointer(d), rx = UnsafeRawPointer(x)
    while i &+ 16 <= n {
        let a = rx.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
        let z = a * vScale + vShift
        let g = rd.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
            .replacing(with: 0, where: .!(z .> 0))
        accSum += g
        accDot += g * a
        i &+= 16
    }
    var s = accSum.sum(), t = accDot.sum()
    while i < n {
        if x[i] * scale + shift > 0 { s += d[i]; t += d[i] * x[i] }
        i &+= 1
    }
    return (s, t)
}

/// `y[i] = max((x[i]·scale + shift) + r[i], 0)` (0 also for NaN): a residual block's last batch
/// norm, its shortcut and the ReLU after the sum in one pass (rounded as the three steps apart).
public func reluAffineAdd(_ x: UnsafePointer<Float>, _ r: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
                          _ n: Int, scale: Float, shift: Float) {
    let vScale = SIMD16<Float>(repeating: scale), vShift = SIMD16<Float>(repeating: shift)
    var i = 0
    let rx = UnsafeRawPointer(x), rr = UnsafeRawPointer(r), ry = UnsafeMutableRawPointer(y)
    while i &+ 16 <= n {
        let a = rx.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self) * vScale + vShift
        let z = a + rr.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
        ry.storeBytes(of: z.replacing(with: 0, where: .!(z .> 0)), toByteOffset: i &* 4, as: SIMD16<Float>.self)
        i &+= 16
    }
    while i < n {
        let z = (x[i] * scale + shift) + r[i]
        y[i] = z > 0 ? z : 0
        i &+= 1
    }
}

/// `y[i] = max(x[i]·scale + shift, 0)` (0 also for NaN): batch norm's affine map and ReLU in one pass.
public func reluAffine(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int,
                       scale: Float, shift: Float) {
    let vScale = SIMD16<Float>(repeating: scale), vShift = SIMD16<Float>(repeating: shift)
    var i = 0
    let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
    while i &+ 16 <= n {
        let z = rx.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self) * vScale + vShift
        ry.storeBytes(of: z.replacing(with: 0, where: .!(z .> 0)), toByteOffset: i &* 4, as: SIMD16<Float>.self)
        i &+= 16
    }
    while i < n {
        let z = x[i] * scale + shift
        y[i] = z > 0 ? z : 0
        i &+= 1
    }
}

/// `out[i] = a[i] + b[i]`, or with `gate`, `gate[i] > 0 ? a[i] + b[i] : 0`: a residual block's
/// input gradient, the sum of its branches' (gated by the ReLU whose output `gate` is).
public func sumGated(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, gate: UnsafePointer<Float>?,
                     _ out: UnsafeMutablePointer<Float>, _ n: Int) {
    var i = 0
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b), ro = UnsafeMutableRawPointer(out)
    if let gate {
        let rg = UnsafeRawPointer(gate)
        while i &+ 16 <= n {
            let s = ra.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
                + rb.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
            let g = rg.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
            ro.storeBytes(of: s.replacing(with: 0, where: .!(g .> 0)), toByteOffset: i &* 4, as: SIMD16<Float>.self)
            i &+= 16
        }
        while i < n { out[i] = gate[i] > 0 ? a[i] + b[i] : 0; i &+= 1 }
    } else {
        while i &+ 16 <= n {
            let s = ra.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
                + rb.loadUnaligned(fromByteOffset: i &* 4, as: SIMD16<Float>.self)
            ro.storeBytes(of: s, toByteOffset: i &* 4, as: SIMD16<Float>.self)
            i &+= 16
        }
        while i < n { out[i] = a[i] + b[i]; i &+= 1 }
    }
}
