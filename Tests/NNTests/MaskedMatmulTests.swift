import XCTest
@testable import NN
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
                XCTAssertEqual(layer.kernelReports.first?.forward, .sparse)
                XCTAssertEqual(layer.kernelReports.first?.weightGradient, .sparse)
                XCTAssertEqual(layer.kernelReports.first?.inputGradient, .sparse)
                XCTAssertEqual(layer.kernelReports.first?.timed, [nil, nil, nil], "a fixed mode times nothing")
            }
            if mode == .auto, let report = layer.kernelReports.first {
                // Each pass was timed both ways, and took the path the rule gives for those times.
                let paths = [report.forward, report.inputGradient, report.weightGradient]
                for (pass, (t, path)) in zip(report.timed, paths).enumerated() {
                    guard let t else { XCTFail("pass \(pass) not timed"); continue }
                    XCTAssertGreaterThan(t.dense, 0)
                    XCTAssertGreaterThan(t.sparse, 0)
                    XCTAssertEqual(path, t.sparse < PassTiming.sparseBelowDenseFraction * t.dense ? .sparse : .dense, "pass \(pass)")
                }
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

    /// The same for convolutions: 1×1 stride-1 (a matmul over images × pixels, 4·30 = 120 columns
    /// and one wider than the kernels' column chunk), 3×3 stride 1 and 2 (the direct 3×3 kernel
    /// and im2col as the dense paths), 7×7 stride 2 padding 3, 1×1 stride 2 (a matmul over the
    /// subsampled input, even and odd sizes); bias on; the second forward uses the recorded choice.
    func testConvolutionPassesEqualTheDenseOnes() {
        // (h, w): 8 × 8 and 4 × 4 with 8 images take the planes layout where it is chosen (stride 2: its
        // phases; the 7×7 stride-2 layer on 16 × 16: the stem's planes forward and input gradient).
        // With 8 images of 8 × 8 (a grid of 8 × 8 for the stride-2 7×7 layer) the middle tiles of
        // 128 positions read their taps through aligned loads shifted into place.
        let cases: [(k: Int, s: Int, p: Int, batch: Int, h: Int, w: Int)] = [
            (1, 1, 0, 4, 5, 6), (1, 1, 0, 3, 20, 21), (3, 1, 1, 3, 8, 9), (3, 1, 1, 2, 7, 8),
            (3, 2, 1, 3, 9, 10), (7, 2, 3, 2, 11, 12), (1, 2, 0, 2, 8, 9), (1, 2, 0, 3, 7, 7), (3, 1, 1, 8, 8, 8), (3, 1, 1, 8, 4, 4), (3, 2, 1, 8, 8, 8), (7, 2, 3, 4, 16, 16),
            (7, 2, 3, 8, 16, 16)]
        for c in cases {
            var rng = Xoshiro256(seed: 6)
            let shape = Shape(n: c.batch, c: 24, h: c.h, w: c.w)
            let x = Tensor(shape)
            for i in 0..<x.count { x.data[i] = rng.nextFloat() - 0.5 }
            var results: [SparseKernelMode: (y: [Float], dw: [Float], dx: [Float])] = [:]
            for mode in [SparseKernelMode.off, .on, .auto] {
                let store = ParameterStore()
                let conv = Conv2d("conv", store: store, inChannels: 24, outChannels: 40, kernelSize: c.k, stride: c.s,
                                  padding: c.p, bias: true)
                store.allocate(seed: 3)
                var maskRng = Xoshiro256(seed: 8)
                let m = store.maskValues(conv.weight)
                for i in 0..<conv.weight.count { m[i] = maskRng.nextDouble() < 0.3 ? 1 : 0 }
                store.applyMask()
                let ctx = Context()
                ctx.sparseKernels = mode
                var y: [Float] = []
                for _ in 0..<2 { y = Array(conv.forward(x, ctx).buffer) }
                let outShape = try! conv.outputShape(for: shape)
                var dyRng = Xoshiro256(seed: 12)
                let dy = ctx.gradientBuffer(outShape)
                for i in 0..<outShape.count { dy.data[i] = dyRng.nextFloat() - 0.5 }
                store.zeroGradients()
                let dx = conv.backward(dy, ctx)
                let g = store.gradient(conv.weight)
                results[mode] = (y, (0..<conv.weight.count).map { m[$0] != 0 ? g[$0] : 0 }, Array(dx.buffer))
                if mode == .on {
                    let report = conv.kernelReports.first
                    XCTAssertEqual([report?.forward, report?.inputGradient, report?.weightGradient], [.sparse, .sparse, .sparse])
                }
            }
            let dense = results[.off]!
            for mode in [SparseKernelMode.on, .auto] {
                let r = results[mode]!
                XCTAssertEqual(r.y.count, dense.y.count)
                XCTAssertEqual(r.dx.count, dense.dx.count)
                for (a, b) in zip(r.y, dense.y) { XCTAssertEqual(a, b, accuracy: 1e-5, "\(c) \(mode) forward") }
                for (a, b) in zip(r.dw, dense.dw) { XCTAssertEqual(a, b, accuracy: 1e-4, "\(c) \(mode) weight gradient") }
                for (a, b) in zip(r.dx, dense.dx) { XCTAssertEqual(a, b, accuracy: 1e-5, "\(c) \(mode) input gradient") }
            }
        }
    }

    /// In `auto` mode a weight denser than `alwaysDenseAbove` runs dense and its layer holds no
    /// sparse index (a dense model would otherwise carry a full index per layer); the index is
    /// built when the mask thins below it, and dropped again when it fills up.
    func testAutoModeKeepsNoIndexForDenseLayers() {
        let store = ParameterStore()
        let layer = Linear("fc", store: store, inFeatures: 64, outFeatures: 32)
        store.allocate(seed: 1)
        let x = Tensor(Shape(n: 16, c: 64))
        for i in 0..<x.count { x.data[i] = Float(i % 7) - 3 }
        let ctx = Context()
        ctx.sparseKernels = .auto
        var rng = Xoshiro256(seed: 2)
        for density in [1, 0.6, 0.1, 0.9] {
            let m = store.maskValues(layer.weight)
            for i in 0..<layer.weight.count { m[i] = rng.nextDouble() < density ? 1 : 0 }
            store.applyMask()
            _ = layer.forward(x, ctx)
            let report = layer.kernelReports[0]
            XCTAssertEqual(report.density, Double(sum(m, layer.weight.count)) / Double(layer.weight.count), accuracy: 1e-12)
            XCTAssertEqual(layer.holdsSparseIndex, report.density <= MaskedPasses.alwaysDenseAbove, "density \(density)")
            if report.density > MaskedPasses.alwaysDenseAbove { XCTAssertEqual(report.forward, .dense) }
        }
    }
}
