import Foundation
import XCTest
@testable import Datasets

/// The real CIFAR-10 (JPEG, ImageFolder layout) beside the repository, when present.
final class RealCIFARTests: XCTestCase {
    static var root: String {
        if let env = ProcessInfo.processInfo.environment["SPARSETRAIN_CIFAR10"] { return env }
        let repo = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        return repo.deletingLastPathComponent().appendingPathComponent("shared/data/cifar10").path
    }

    func folder(_ split: String) throws -> ImageFolder {
        let path = Self.root + "/" + split
        guard FileManager.default.fileExists(atPath: path) else {
            throw XCTSkip("CIFAR-10 not found at \(path) (set SPARSETRAIN_CIFAR10 to its directory)")
        }
        return try ImageFolder(root: path)
    }

    func testCountsAndClasses() throws {
        let train = try folder("train"), test = try folder("test")
        XCTAssertEqual(train.count, 50_000)
        XCTAssertEqual(test.count, 10_000)
        XCTAssertEqual(train.classNames, CIFARBinary.cifar10Classes)
        XCTAssertEqual(Dictionary(grouping: train.labels, by: { $0 }).mapValues(\.count).values.sorted(), Array(repeating: 5000, count: 10))
        XCTAssertEqual(Dictionary(grouping: test.labels, by: { $0 }).mapValues(\.count).values.sorted(), Array(repeating: 1000, count: 10))
    }

    func testChannelMeansAreCIFARs() throws {
        let test = try InMemoryDataset.load(try folder("test"), threads: 2)
        XCTAssertEqual(test.width, 32)
        var sums = [Double](repeating: 0, count: 3)
        for (i, v) in test.pixels.enumerated() { sums[i % 3] += Double(v) }
        let means = sums.map { $0 / Double(test.count * 1024) / 255 }
        XCTAssertEqual(means[0], 0.49, accuracy: 0.015)
        XCTAssertEqual(means[1], 0.48, accuracy: 0.015)
        XCTAssertEqual(means[2], 0.45, accuracy: 0.015)
    }
}
