import Tensor

/// Shape of an activation: batch N, channels C, height H, width W.
///
/// Activations are stored channel-major, (C, N, H, W): one convolution is then one GEMM over the
/// whole batch (`Y[Cout, N·Ho·Wo] = W[Cout, C·kh·kw] · col`), and batch-norm statistics run over
/// contiguous memory. Inputs arrive as NCHW and are transposed once by the network.
/// A feature vector is (C, N, 1, 1): column n of a (C × N) matrix.
public struct Shape: Sendable, Equatable, CustomStringConvertible {
    public var n: Int, c: Int, h: Int, w: Int
    public init(n: Int, c: Int, h: Int = 1, w: Int = 1) {
        self.n = n; self.c = c; self.h = h; self.w = w
    }
    public var count: Int { n * c * h * w }
    /// Elements of one channel of one image.
    public var plane: Int { h * w }
    public var description: String { "\(c)×\(h)×\(w)" }
}

/// A float buffer with a shape, owned by the layer that writes it. Reallocated only when a
/// larger shape is asked for, so steps at a fixed batch shape allocate nothing.
public final class Tensor {
    public private(set) var shape: Shape
    public private(set) var data: UnsafeMutablePointer<Float>
    private var capacity: Int

    public init(_ shape: Shape = Shape(n: 0, c: 0)) {
        self.shape = shape
        capacity = max(shape.count, 1)
        data = allocateAlignedFloats(capacity)
        data.initialize(repeating: 0, count: capacity)
    }

    deinit { data.deallocate() }

    /// Gives the tensor `shape`, growing the buffer if needed. Contents are unspecified.
    public func reshape(_ shape: Shape) {
        self.shape = shape
        if shape.count > capacity {
            data.deallocate()
            capacity = shape.count
            data = allocateAlignedFloats(capacity)
            data.initialize(repeating: 0, count: capacity)
        }
    }

    public var count: Int { shape.count }
    public var buffer: UnsafeMutableBufferPointer<Float> { .init(start: data, count: shape.count) }

    public func zero() { data.update(repeating: 0, count: shape.count) }

    /// Elements the buffer can hold without reallocating.
    public var capacityCount: Int { capacity }

    /// Bytes currently reserved.
    public var reservedBytes: Int { capacity * MemoryLayout<Float>.stride }
}
