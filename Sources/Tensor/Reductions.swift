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
