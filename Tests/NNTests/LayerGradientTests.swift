import XCTest
@testable import NN
import Tensor

final class LayerGradientTests: XCTestCase {
    func testConvolutionBackwardMatchesFiniteDifferences() {
        let cases: [(cin: Int, cout: Int, k: Int, s: Int, p: Int, h: Int, w: Int, bias: Bool)] = [
            (3, 4, 3, 1, 1, 5, 6, false),
            (2, 3, 3, 2, 1, 7, 5, true),
            (3, 2, 1, 1, 0, 4, 3, false),   // pointwise path
            (4, 3, 1, 2, 0, 5, 5, false),   // strided 1×1 (ResNet downsample)
            (1, 2, 5, 2, 2, 9, 8, true),
            (2, 2, 7, 2, 3, 9, 9, false),   // ImageNet stem shape
        ]
        for (i, c) in cases.enumerated() {
            let store = ParameterStore()
            let conv = Conv2d("c", store: store, inChannels: c.cin, outChannels: c.cout, kernelSize: c.k,
                              stride: c.s, padding: c.p, bias: c.bias)
            store.allocate(seed: UInt64(i))
            GradientCheck().run(conv, store: store, input: Shape(n: 3, c: c.cin, h: c.h, w: c.w), seed: UInt64(i))
        }
    }

    func testDirectConvolutionBackwardMatchesFiniteDifferences() throws {
        try XCTSkipUnless(Conv3x3.isAvailable, "no AVX2/FMA on this CPU")
        let cases: [(cin: Int, cout: Int, h: Int, w: Int, bias: Bool, firstLayer: Bool)] = [
            (4, 8, 5, 8, true, false), (8, 4, 3, 16, false, false), (3, 4, 4, 8, false, true),
        ]
        for (i, c) in cases.enumerated() {
            let store = ParameterStore()
            let conv = Conv2d("c", store: store, inChannels: c.cin, outChannels: c.cout, kernelSize: 3,
                              padding: 1, bias: c.bias)
            conv.needsInputGradient = !c.firstLayer
            store.allocate(seed: UInt64(i))
            XCTAssertTrue(conv.usesDirectKernel(Shape(n: 3, c: c.cin, h: c.h, w: c.w), {
                let ctx = Context(); ctx.convolutionAlgorithm = .direct; return ctx }()))
            var check = GradientCheck()
            check.convolution = .direct
            check.run(conv, store: store, input: Shape(n: 3, c: c.cin, h: c.h, w: c.w), seed: UInt64(i),
                      checkInput: !c.firstLayer)
        }
    }

    /// The small-image kernels (AVX-512) inside a layer: 4×4 and 2×2 inputs.
    func testSmallImageConvolutionBackwardMatchesFiniteDifferences() throws {
        try XCTSkipUnless(Conv3x3.isSupported(.avx512), "no AVX-512 on this CPU: the small-image kernels are not run")
        for (i, c) in [(cin: 8, cout: 8, h: 4, w: 4, bias: true), (cin: 16, cout: 8, h: 2, w: 2, bias: false)].enumerated() {
            let store = ParameterStore()
            let conv = Conv2d("c", store: store, inChannels: c.cin, outChannels: c.cout, kernelSize: 3,
                              padding: 1, bias: c.bias)
            store.allocate(seed: UInt64(i + 7))
            let ctx = Context()
            XCTAssertEqual(conv.directKernel(Shape(n: 3, c: c.cin, h: c.h, w: c.w), ctx), .smallImages)
            // `.direct`: at 2×2 `.automatic` takes the pixel product.
            GradientCheck(convolution: .direct).run(conv, store: store, input: Shape(n: 3, c: c.cin, h: c.h, w: c.w),
                                                    seed: UInt64(i + 7))
        }
    }

    /// 3×3 convolutions on images of at most 2×2 pixels as one product over images (every output
    /// pixel against every input pixel through its tap): 2×2, 1×2, 2×1 and 1×1 images.
    func testPixelProductConvolutionBackwardMatchesFiniteDifferences() {
        for (i, c) in [(cin: 5, cout: 4, h: 2, w: 2, bias: true), (cin: 3, cout: 6, h: 1, w: 2, bias: false),
                       (cin: 4, cout: 3, h: 2, w: 1, bias: false), (cin: 6, cout: 5, h: 1, w: 1, bias: true)].enumerated() {
            let store = ParameterStore()
            let conv = Conv2d("c", store: store, inChannels: c.cin, outChannels: c.cout, kernelSize: 3,
                              padding: 1, bias: c.bias)
            store.allocate(seed: UInt64(i + 17))
            let shape = Shape(n: 3, c: c.cin, h: c.h, w: c.w)
            XCTAssertTrue(conv.usesPixelProduct(shape, Context()))
            GradientCheck().run(conv, store: store, input: shape, seed: UInt64(i + 17))
        }
    }

    /// Winograd F(2×2, 3×3) and F(4×4, 3×3) inside a layer: sizes with tiles partly outside the image.
    func testWinogradConvolutionBackwardMatchesFiniteDifferences() {
        for algorithm in [ConvolutionAlgorithm.winograd, .winograd4] {
            for (i, c) in [(cin: 4, cout: 3, h: 4, w: 6, bias: true), (cin: 3, cout: 5, h: 5, w: 3, bias: false)].enumerated() {
                let store = ParameterStore()
                let conv = Conv2d("c", store: store, inChannels: c.cin, outChannels: c.cout, kernelSize: 3,
                                  padding: 1, bias: c.bias)
                store.allocate(seed: UInt64(i + 27))
                let shape = Shape(n: 3, c: c.cin, h: c.h, w: c.w), ctx = Context()
                ctx.convolutionAlgorithm = algorithm
                XCTAssertEqual(conv.winograd(shape, ctx)?.tile, algorithm == .winograd ? 2 : 4)
                GradientCheck(convolution: algorithm).run(conv, store: store, input: shape, seed: UInt64(i + 27))
            }
        }
    }

    func testConvolutionWithSmallColumnBudgetMatchesFiniteDifferences() {
        let store = ParameterStore()
        let conv = Conv2d("c", store: store, inChannels: 2, outChannels: 3, kernelSize: 3, padding: 1)
        store.allocate(seed: 3)
        // Budget of one image per GEMM: exercises the chunked path.
        final class SmallBudget: Layer {
            let inner: Conv2d
            init(_ inner: Conv2d) { self.inner = inner }
            func outputShape(for s: Shape) throws -> Shape { try inner.outputShape(for: s) }
            func forward(_ x: Tensor, _ ctx: Context) -> Tensor { ctx.columnBudget = 18 * 16; return inner.forward(x, ctx) }
            func backward(_ d: Tensor, _ ctx: Context) -> Tensor { ctx.columnBudget = 18 * 16; return inner.backward(d, ctx) }
        }
        GradientCheck().run(SmallBudget(conv), store: store, input: Shape(n: 4, c: 2, h: 4, w: 4))
    }

    func testLinearBackwardMatchesFiniteDifferences() {
        let store = ParameterStore()
        let fc = Linear("fc", store: store, inFeatures: 7, outFeatures: 5)
        store.allocate(seed: 2)
        GradientCheck().run(fc, store: store, input: Shape(n: 4, c: 7))
    }

    func testBatchNormBackwardMatchesFiniteDifferences() {
        for shape in [Shape(n: 4, c: 3, h: 3, w: 2), Shape(n: 6, c: 5)] {   // 2-d and 1-d
            let store = ParameterStore()
            let bn = BatchNorm("bn", store: store, channels: shape.c)
            store.allocate(seed: 5)
            // Non-trivial γ, β.
            for i in 0..<store.count { store.values[i] = 0.5 + Float(i % 3) * 0.3 }
            GradientCheck(step: 1e-2, tolerance: 3e-2).run(bn, store: store, input: shape)
        }
    }

    func testBatchNormWithReLUMatchesFiniteDifferences() {
        for shape in [Shape(n: 4, c: 3, h: 3, w: 2), Shape(n: 6, c: 5)] {
            let store = ParameterStore()
            let bn = BatchNorm("bn", store: store, channels: shape.c, relu: true)
            store.allocate(seed: 5)
            for i in 0..<store.count { store.values[i] = 0.5 + Float(i % 3) * 0.3 - (i % 2 == 1 ? 0.9 : 0) }
            GradientCheck(step: 1e-3, tolerance: 3e-2).run(bn, store: store, input: shape)
        }
    }

    /// Batch norm with its ReLU fused gives what batch norm followed by a ReLU layer gives, bit
    /// for bit (output, input gradient, γ and β gradients), training and evaluation, with sizes
    /// that leave a tail after the 16-wide vectors.
    func testBatchNormWithReLUEqualsBatchNormThenReLU() {
        for (shape, training) in [(Shape(n: 4, c: 3, h: 5, w: 7), true), (Shape(n: 6, c: 5), true),
                                  (Shape(n: 3, c: 2, h: 4, w: 5), false)] {
            let store = ParameterStore()
            let separate = Sequential([BatchNorm("a", store: store, channels: shape.c), ReLU(inPlace: true)])
            let fused = BatchNorm("b", store: store, channels: shape.c, relu: true)
            store.allocate(seed: 9)
            let c = shape.c
            for i in 0..<c {
                store.values[i] = 0.4 + Float(i) * 0.3 - (i % 2 == 1 ? 1.2 : 0)     // γ, one negative
                store.values[c + i] = Float(i) * 0.2 - 0.3                           // β
            }
            for i in 0..<(2 * c) { store.values[2 * c + i] = store.values[i] }
            var rng = Xoshiro256(seed: 4)
            let x = Tensor(shape), dy = Tensor(shape), dy2 = Tensor(shape)
            for i in 0..<x.count { x.data[i] = rng.nextFloat() * 2 - 1; dy.data[i] = rng.nextFloat() * 2 - 1 }
            dy2.data.update(from: dy.data, count: dy.count)
            let ctx = Context()
            if !training {
                ctx.training = false
                let stats = (0..<c).map { Float($0) * 0.1 - 0.1 }, variances = (0..<c).map { 0.5 + Float($0) }
                for case let bn as BatchNorm in separate.layers { bn.setRunningStatistics(mean: stats, variance: variances) }
                fused.setRunningStatistics(mean: stats, variance: variances)
            }
            let y1 = Array(UnsafeBufferPointer(start: separate.forward(x, ctx).data, count: x.count))
            let y2 = Array(UnsafeBufferPointer(start: fused.forward(x, ctx).data, count: x.count))
            XCTAssertEqual(y1, y2, "forward \(shape)")
            XCTAssertTrue(y2.contains(0) && y2.contains { $0 > 0 }, "the ReLU gates some entries")
            store.zeroGradients()
            let g1 = separate.backward(dy, ctx), g2 = fused.backward(dy2, ctx)
            withExtendedLifetime((g1, g2)) {
                XCTAssertEqual(Array(UnsafeBufferPointer(start: g1.data, count: x.count)),
                               Array(UnsafeBufferPointer(start: g2.data, count: x.count)), "input gradient \(shape)")
            }
            XCTAssertEqual(Array(store.gradients[0..<(2 * c)]), Array(store.gradients[(2 * c)..<(4 * c)]), "γ, β gradients \(shape)")
        }
    }

    /// Batch norm's input gradient written over dy (a pooled gradient nothing else holds) equals
    /// the one written to a new buffer, bit for bit: with and without the ReLU, training and
    /// evaluation, sizes that leave a tail after the 16-wide vectors.
    func testBatchNormBackwardInPlaceEqualsNewBuffer() {
        for (relu, training) in [(true, true), (false, true), (true, false)] {
            let shape = Shape(n: 3, c: 4, h: 5, w: 7)
            let store = ParameterStore()
            let bn = BatchNorm("bn", store: store, channels: shape.c, relu: relu)
            store.allocate(seed: 3)
            for i in 0..<shape.c { store.values[i] = 0.5 + Float(i) * 0.4 - (i % 2 == 1 ? 1.3 : 0) }
            var rng = Xoshiro256(seed: 6)
            let x = Tensor(shape), apart = Tensor(shape)
            for i in 0..<x.count { x.data[i] = rng.nextFloat() * 2 - 1; apart.data[i] = rng.nextFloat() * 2 - 1 }
            let ctx = Context()
            ctx.training = training
            _ = bn.forward(x, ctx)
            let pooled = ctx.gradientBuffer(shape)
            pooled.data.update(from: apart.data, count: x.count)
            XCTAssertTrue(ctx.isSoleReference(pooled) && !ctx.isSoleReference(apart))
            let fresh = bn.backward(apart, ctx), overwritten = bn.backward(pooled, ctx)
            XCTAssertTrue(overwritten === pooled, "the pooled dy is overwritten (relu \(relu), training \(training))")
            XCTAssertFalse(fresh === apart)
            withExtendedLifetime((fresh, overwritten)) {
                XCTAssertEqual(Array(UnsafeBufferPointer(start: fresh.data, count: x.count)),
                               Array(UnsafeBufferPointer(start: overwritten.data, count: x.count)),
                               "relu \(relu), training \(training)")
            }
        }
    }

    /// A residual block's last batch norm with the shortcut and the ReLU in its own pass gives bit
    /// for bit what the batch norm, the sum and the ReLU give one after the other: training per
    /// channel, training with a (one-rank) cross-rank reduction, and evaluation.
    func testBatchNormAddingTheShortcutEqualsTheStepsApart() {
        for mode in ["per channel", "reduced", "evaluation"] {
            let shape = Shape(n: 4, c: 3, h: 5, w: 7), c = shape.c
            let store = ParameterStore()
            let apart = BatchNorm("a", store: store, channels: c), fused = BatchNorm("b", store: store, channels: c)
            store.allocate(seed: 9)
            for i in 0..<c {
                store.values[i] = 0.4 + Float(i) * 0.3 - (i % 2 == 1 ? 1.2 : 0)     // γ, one negative
                store.values[c + i] = Float(i) * 0.2 - 0.3                           // β
            }
            for i in 0..<(2 * c) { store.values[2 * c + i] = store.values[i] }
            let ctx = Context()
            if mode == "reduced" { for bn in [apart, fused] { bn.crossReplicaSum = { _ in } } }
            if mode == "evaluation" {
                ctx.training = false
                for bn in [apart, fused] { bn.setRunningStatistics(mean: [0.1, -0.2, 0.3], variance: [0.5, 1.5, 2]) }
            }
            var rng = Xoshiro256(seed: 6)
            let x = Tensor(shape), shortcut = Tensor(shape), out = Tensor()
            for i in 0..<x.count { x.data[i] = rng.nextFloat() * 2 - 1; shortcut.data[i] = rng.nextFloat() * 2 - 1 }
            let normalized = apart.forward(x, ctx)
            let expected = (0..<x.count).map { i -> Float in
                let v = normalized.data[i] + shortcut.data[i]
                return v > 0 ? v : 0
            }
            let y = fused.forward(x, adding: shortcut, into: out, ctx)
            let got = Array(UnsafeBufferPointer(start: y.data, count: x.count))
            XCTAssertEqual(got, expected, mode)
            XCTAssertTrue(got.contains(0) && got.contains { $0 > 0 }, "the ReLU gates some entries (\(mode))")
            XCTAssertEqual(apart.runningMean, fused.runningMean, mode)
            XCTAssertEqual(apart.runningVar, fused.runningVar, mode)
        }
    }

    /// The per-channel path (statistics, output and input gradient while a channel is in cache)
    /// gives what the reduced path (every channel's sums first, then a cross-rank reduction, here
    /// over one rank) gives: outputs, running statistics, input and γ/β gradients, with and
    /// without the fused ReLU.
    func testBatchNormLocalPathEqualsReducedPath() {
        for relu in [false, true] {
            let shape = Shape(n: 5, c: 4, h: 6, w: 7)
            let store = ParameterStore()
            let local = BatchNorm("a", store: store, channels: shape.c, relu: relu)
            let reduced = BatchNorm("b", store: store, channels: shape.c, relu: relu)
            reduced.crossReplicaSum = { _ in }
            store.allocate(seed: 3)
            let c = shape.c
            for i in 0..<(2 * c) { store.values[i] = 0.3 + Float(i) * 0.2 - (i % 3 == 1 ? 0.8 : 0) }
            for i in 0..<(2 * c) { store.values[2 * c + i] = store.values[i] }
            var rng = Xoshiro256(seed: 8)
            let x = Tensor(shape), dy = Tensor(shape), dy2 = Tensor(shape)
            for i in 0..<x.count { x.data[i] = rng.nextFloat() * 3 - 1; dy.data[i] = rng.nextFloat() * 2 - 1 }
            dy2.data.update(from: dy.data, count: dy.count)
            let ctx = Context()
            store.zeroGradients()
            let y1 = Array(UnsafeBufferPointer(start: local.forward(x, ctx).data, count: x.count))
            let y2 = Array(UnsafeBufferPointer(start: reduced.forward(x, ctx).data, count: x.count))
            let g1 = local.backward(dy, ctx), g2 = reduced.backward(dy2, ctx)
            let dx1 = Array(UnsafeBufferPointer(start: g1.data, count: x.count))
            let dx2 = Array(UnsafeBufferPointer(start: g2.data, count: x.count))
            func assertClose(_ a: [Float], _ b: [Float], _ what: String) {
                XCTAssertEqual(a.count, b.count)
                let worst = zip(a, b).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? 0
                XCTAssertLessThanOrEqual(worst, 1e-5, "\(what), relu \(relu)")
            }
            assertClose(y1, y2, "output")
            assertClose(dx1, dx2, "input gradient")
            assertClose(local.runningMean, reduced.runningMean, "running mean")
            assertClose(local.runningVar, reduced.runningVar, "running variance")
            assertClose(Array(store.gradients[0..<(2 * c)]), Array(store.gradients[(2 * c)..<(4 * c)]), "γ, β gradients")
            XCTAssertTrue(dx1.contains { $0 != 0 }, "a non-trivial input gradient")
        }
    }

    func testBatchNormInEvaluationModeMatchesFiniteDifferences() {
        let store = ParameterStore()
        let bn = BatchNorm("bn", store: store, channels: 3)
        store.allocate(seed: 5)
        for i in 0..<store.count { store.values[i] = 0.7 - Float(i % 4) * 0.3 }
        bn.setRunningStatistics(mean: [0.1, -0.2, 0.3], variance: [0.5, 2, 1.5])
        GradientCheck(training: false).run(bn, store: store, input: Shape(n: 4, c: 3, h: 2, w: 3))
    }

    func testActivationsPoolingAndFlattenMatchFiniteDifferences() {
        let store = ParameterStore()
        store.allocate(seed: 0)
        let s = Shape(n: 2, c: 3, h: 5, w: 6)
        GradientCheck(step: 1e-3).run(ReLU(), store: store, input: s)
        GradientCheck(step: 1e-3).run(MaxPool2d(kernelSize: 2), store: store, input: s)
        // Even planes take the 2×2 tiling path.
        GradientCheck(step: 1e-3).run(MaxPool2d(kernelSize: 2), store: store, input: Shape(n: 2, c: 3, h: 4, w: 6))
        GradientCheck(step: 1e-3).run(MaxPool2d(kernelSize: 3, stride: 2, padding: 1), store: store, input: s)
        GradientCheck().run(AvgPool2d(kernelSize: 2), store: store, input: s)
        GradientCheck().run(AvgPool2d.global(), store: store, input: s)
        GradientCheck().run(Flatten(), store: store, input: s)
        GradientCheck().run(ZeroPadShortcut(outChannels: 7, stride: 2), store: store, input: s)
    }

    func testResidualBlocksMatchFiniteDifferences() {
        for projection in [false, true] {
            let store = ParameterStore()
            let block = basicBlock(store, "b", 2, 4, 2, shortcut: {
                projection
                    ? Sequential([Conv2d("b.downsample.0", store: store, inChannels: 2, outChannels: 4, kernelSize: 1, stride: 2),
                                  BatchNorm("b.downsample.1", store: store, channels: 4)]) as Layer
                    : ZeroPadShortcut(outChannels: 4, stride: 2) as Layer
            })
            store.allocate(seed: 9)
            GradientCheck(step: 1e-3, tolerance: 2e-2).run(block, store: store, input: Shape(n: 3, c: 2, h: 6, w: 6))
        }
        let store = ParameterStore()
        let block = bottleneck(store, "b", 8, 2, 1, shortcut: { nil })
        store.allocate(seed: 4)
        GradientCheck(step: 1e-3, tolerance: 2e-2).run(block, store: store, input: Shape(n: 3, c: 8, h: 4, w: 4))
    }

    func testLossGradientMatchesFiniteDifferences() {
        let ctx = Context()
        for smoothing: Float in [0, 0.1] {
            let loss = SoftmaxCrossEntropy(labelSmoothing: smoothing)
            let logits = Tensor(Shape(n: 5, c: 4))
            var rng = Xoshiro256(seed: 11)
            for i in 0..<logits.count { logits.data[i] = rng.nextFloat() * 4 - 2 }
            let labels: [Int32] = [0, 3, 1, 2, 3]
            let (_, _) = loss(logits, labels: labels, normalizer: 5, ctx: ctx)
            let analytic = Array(loss.gradient.buffer)
            let h: Float = 1e-2
            for i in 0..<logits.count {
                let saved = logits.data[i]
                logits.data[i] = saved + h
                let plus = loss(logits, labels: labels, normalizer: 5, ctx: ctx).loss
                logits.data[i] = saved - h
                let minus = loss(logits, labels: labels, normalizer: 5, ctx: ctx).loss
                logits.data[i] = saved
                XCTAssertEqual((plus - minus) / (2 * h), analytic[i], accuracy: 2e-3, "logit \(i) ε=\(smoothing)")
            }
        }
    }
}

final class InPlaceReLUTests: XCTestCase {
    /// BN → ReLU → conv with an in-place ReLU gives the outputs and gradients of a copying one.
    func testInPlaceReLUMatchesTheCopyingOne() {
        var results: [[Float]] = []
        for inPlace in [false, true] {
            let store = ParameterStore()
            let chain = Sequential([
                BatchNorm("bn", store: store, channels: 3), ReLU(inPlace: inPlace),
                Conv2d("c", store: store, inChannels: 3, outChannels: 2, kernelSize: 3, padding: 1),
            ])
            store.allocate(seed: 8)
            let ctx = Context()
            let x = Tensor(Shape(n: 2, c: 3, h: 4, w: 4))
            var rng = Xoshiro256(seed: 3)
            for i in 0..<x.count { x.data[i] = rng.nextFloat() - 0.5 }
            let y = chain.forward(x, ctx)
            let dy = Tensor(y.shape)
            for i in 0..<dy.count { dy.data[i] = Float(i % 5) - 2 }
            let dx = chain.backward(dy, ctx)
            results.append(Array(y.buffer) + Array(dx.buffer) + Array(store.gradients) + Array(x.buffer))
        }
        XCTAssertEqual(results[0], results[1])
    }
}

final class FusedPoolingTests: XCTestCase {
    /// A batch norm with its ReLU followed by a 2×2 max pooling runs as one pass each way inside a
    /// Sequential (neither the batch norm's output nor the pooling's input gradient written):
    /// output, input gradient, parameter gradients and running statistics bit for bit those of
    /// the layers run one by one — in training and evaluation, with and without a (one-rank)
    /// cross-rank reduction, on two workers (16 × 4 × 32 × 32), and on a plane the windows do
    /// not tile (not fused).
    func testBatchNormThenMaxPoolingEqualsTheLayersApart() {
        for (shape, mode) in [(Shape(n: 3, c: 3, h: 6, w: 20), "training"), (Shape(n: 3, c: 3, h: 6, w: 20), "reduced"),
                              (Shape(n: 2, c: 3, h: 4, w: 4), "evaluation"), (Shape(n: 2, c: 3, h: 5, w: 6), "training"),
                              (Shape(n: 16, c: 3, h: 32, w: 32), "training")] {
            var results: [[Float]] = []
            for fused in [true, false] {
                let store = ParameterStore()
                let layers: [Layer] = [
                    Conv2d("c", store: store, inChannels: 3, outChannels: 4, kernelSize: 3, padding: 1),
                    BatchNorm("bn", store: store, channels: 4, relu: true), MaxPool2d(kernelSize: 2),
                ]
                store.allocate(seed: 12)
                let bn = layers[1] as! BatchNorm
                if mode == "reduced" { bn.crossReplicaSum = { _ in } }
                let ctx = Context()
                ctx.threads = 2
                if mode == "evaluation" {
                    ctx.training = false
                    bn.setRunningStatistics(mean: [0.1, -0.2, 0.3, 0], variance: [0.5, 1.5, 2, 1])
                }
                var rng = Xoshiro256(seed: 2)
                let x = Tensor(shape)
                for i in 0..<x.count { x.data[i] = rng.nextFloat() * 2 - 1 }
                let net = Sequential(layers)
                let y = fused ? net.forward(x, ctx) : layers.reduce(x) { $1.forward($0, ctx) }
                let dy = Tensor(y.shape)
                for i in 0..<dy.count { dy.data[i] = rng.nextFloat() - 0.5 }
                let dx = fused ? net.backward(dy, ctx) : layers.reversed().reduce(dy) { $1.backward($0, ctx) }
                results.append(Array(y.buffer) + Array(dx.buffer) + Array(store.gradients) + bn.runningMean + bn.runningVar)
            }
            let differing = zip(results[0], results[1]).filter { $0.bitPattern != $1.bitPattern }.count
            XCTAssertEqual(results[0].count, results[1].count)
            XCTAssertEqual(differing, 0, "\(shape) \(mode): values that differ")
            XCTAssertTrue(results[0].contains(0) && results[0].contains { $0 > 0 })
        }
    }
}

final class ResidualChainTests: XCTestCase {
    /// Consecutive residual blocks gate the gradient once, in the later block's sum of its
    /// branches: a ResNet-20 (basic blocks, option-A shortcuts) and a ResNet-18 (projection
    /// shortcuts) give bit for bit the gradients of the same networks unchained.
    func testChainedResidualBlocksGiveTheUnchainedGradients() throws {
        for model in [ModelName.resnet20, .resnet18] {
            var results: [[Float]] = []
            for linked in [true, false] {
                let net = try buildModel(model, classes: 3, input: (3, 8, 8), hidden: [], seed: 5)
                let blocks = net.body.layers.filter { $0 is ResidualBlock }
                XCTAssertGreaterThan(blocks.count, 2)
                XCTAssertEqual((blocks.first as? ResidualBlock)?.receivesGatedGradient, true, "built chained")
                if !linked { ResidualBlock.chain(net.body.layers, linked: false) }
                let ctx = net.ctx
                let x = Tensor(Shape(n: 4, c: 3, h: 8, w: 8))
                var rng = Xoshiro256(seed: 3)
                for i in 0..<x.count { x.data[i] = rng.nextFloat() * 2 - 1 }
                let y = net.body.forward(x, ctx)
                let dy = Tensor(y.shape)
                for i in 0..<dy.count { dy.data[i] = rng.nextFloat() - 0.5 }
                let dx = net.body.backward(dy, ctx)
                results.append(Array(y.buffer) + Array(dx.buffer) + Array(net.store.gradients))
            }
            let differing = zip(results[0], results[1]).filter { $0 != $1 }.count
            XCTAssertEqual(results[0].count, results[1].count)
            XCTAssertEqual(differing, 0, "\(model): values that differ")
            XCTAssertTrue(results[0].contains { $0 != 0 })
        }
    }
}
