import XCTest
@testable import NN
import Tensor

final class ModelTests: XCTestCase {
    func testParameterCountsMatchReferenceModels() throws {
        // ResNet-20 uses option-A (zero-padding) shortcuts; the classifier has a bias.
        XCTAssertEqual(try buildModel(.resnet20, classes: 10).store.count, 269_722)
        XCTAssertEqual(try buildModel(.vgg16, classes: 10).store.count, 14_724_042)
        XCTAssertEqual(try buildModel(.resnet18, classes: 10).store.count, 11_173_962)
        XCTAssertEqual(try buildModel(.resnet50ImageNet, classes: 1000).store.count, 25_557_032)
    }

    func testParameterNamesFollowPyTorch() throws {
        let r = try buildModel(.resnet18, classes: 10)
        let names = r.store.parameters.map(\.name)
        XCTAssertEqual(names.first, "conv1.weight")
        XCTAssertTrue(names.contains("layer1.0.conv1.weight"))
        XCTAssertTrue(names.contains("layer2.0.downsample.0.weight"))
        XCTAssertEqual(names.last, "fc.bias")
        // downsample registered after the block's main branch
        let i = names.firstIndex(of: "layer2.0.bn2.bias")!, j = names.firstIndex(of: "layer2.0.downsample.0.weight")!
        XCTAssertEqual(j, i + 1)
        let v = try buildModel(.vgg16, classes: 10)
        XCTAssertEqual(v.store.parameters.first?.name, "features.0.weight")
        XCTAssertEqual(v.store.parameters.last?.name, "classifier.bias")
        // Every conv and linear weight is maskable, nothing else.
        for p in r.store.parameters {
            XCTAssertEqual(p.maskable, p.name.hasSuffix(".weight") && p.shape.count >= 2, p.name)
        }
    }

    func testInputTheModelCannotTakeFailsAtBuild() {
        XCTAssertThrowsError(try buildModel(.vgg16, classes: 10, input: (3, 28, 28))) { error in
            XCTAssertTrue("\(error)".contains("too small"), "\(error)")
            XCTAssertTrue("\(error)".contains("vgg16"), "\(error)")
        }
        XCTAssertThrowsError(try buildModel(.resnet20, classes: 1))
        XCTAssertNoThrow(try buildModel(.resnet20, classes: 10, input: (3, 28, 28)))
    }

    func testModelsTooLargeToHoldAreRefusedBeforeAllocating() {
        // Widths whose weight count overflows, and one that fits Int but not this machine's memory.
        XCTAssertThrowsError(try buildModel(.mlp, classes: 10, input: (3, 8, 8), hidden: [100_000_000_000])) {
            XCTAssertTrue("\($0)".contains("too many to hold"), "\($0)")
        }
        XCTAssertThrowsError(try buildModel(.mlp, classes: 10, input: (3, 8, 8), hidden: [200_000_000])) {
            XCTAssertTrue("\($0)".contains("GB for weights, gradients, momentum and mask); this machine has"), "\($0)")
        }
        XCTAssertThrowsError(try buildModel(.resnet20, classes: 10, baseWidth: 1 << 40)) {
            XCTAssertTrue("\($0)".contains("base width must be in 1...4096"), "\($0)")
        }
    }

    func testForwardShapesAndFlops() throws {
        let net = try buildModel(.resnet20, classes: 10)
        let images = [Float](repeating: 0.1, count: 2 * 3 * 32 * 32)
        let logits = net.forward(images: images, batch: 2)
        XCTAssertEqual(logits.shape, Shape(n: 2, c: 10))
        // ResNet-20 is about 41 M multiply-adds per image.
        let macs = net.forwardFlops(batch: 1) / 2
        XCTAssertEqual(macs / 1e6, 40.8, accuracy: 1.0)
    }
}
