import XCTest
import NN
import Tensor

/// A masked linear layer gives the same forward output, weight gradient (at the mask) and input
/// gradient whether its passes run dense, sparse, or are timed and chosen (`auto`, which runs
/// both paths on the first call), with a bias.
final class MaskedMatmulTests: XCTestCase {
    func testSparseAndTimedPassesEqualTheDenseOnes() {
        var rng = Xoshiro256(seed: 4)
        let n = 48
        let x = Tensor(Shape(n: n, c: 300)), dy0 = (0..<(200 * n)).map { _ in rng.nextFloat() - 0.5 }
        for i in 0..<x.count { x.data[i] = rng.nextFloat() - 0.5 }
        var results: [SparseKernelMode: (y: [Float], dw: [Float], dx: [Float])] = [:]
        for mode in [SparseKernelMode.off, .on, .auto] {
            let store = ParameterStore()
            let layer = Linear("fc", store: store, inFeatures: 300, outFeatures: 200)
            store.allocate(seed: 9)
            var maskRng = Xoshiro256(seed: 17)
            let m = store.maskValues(layer.weight)
            for i in 0..<layer.weight.count { m[i] = maskRng.nextDouble() < 0.2 ? 1 : 0 }
            store.applyMask()
            let ctx = Context()
            ctx.sparseKernels = mode
            var y: [Float] = []
            for _ in 0..<2 { y = Array(layer.forward(x, ctx).buffer) }  // the second call uses the recorded choice
            let dy = ctx.gradientBuffer(Shape(n: n, c: 200))
            dy0.withUnsafeBufferPointer { dy.data.update(from: $0.baseAddress!, count: dy0.count) }
            store.zeroGradients()
            let dx = layer.backward(dy, ctx)
            let g = store.gradient(layer.weight)
            let dw = (0..<layer.weight.count).map { m[$0] != 0 ? g[$0] : 0 }
            results[mode] = (y, dw, Array(dx.buffer))
            if mode == .on {
                XCTAssertEqual(layer.kernelReport?.forward, .sparse)
                XCTAssertEqual(layer.kernelReport?.weightGradient, .sparse)
                XCTAssertEqual(layer.kernelReport?.inputGradient, .sparse)
            }
        }
        let dense = results[.off]!
        for mode in [SparseKernelMode.on, .auto] {
            let r = results[mode]!
            for (a, b) in zip(r.y, dense.y) { XCTAssertEqual(a, b, accuracy: 1e-5, "\(mode) forward") }
            for (a, b) in zip(r.dw, dense.dw) { XCTAssertEqual(a, b, accuracy: 1e-5, "\(mode) weight gradient") }
            for (a, b) in zip(r.dx, dense.dx) { XCTAssertEqual(a, b, accuracy: 1e-5, "\(mode) input gradient") }
        }
    }
}
