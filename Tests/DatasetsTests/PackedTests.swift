import Foundation
import XCTest
@testable import Datasets

final class PackedTests: XCTestCase {
    func testPrepareRoundTripRefusalAndVerification() throws {
        let out = NSTemporaryDirectory() + "sparsetrain-packed-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: out) }
        let source = SyntheticDataset(count: 25, classes: 3, width: 12, height: 12, seed: 4)
        let (written, skipped) = try prepareDataset(source, size: 12, output: out, overwrite: false, imagesPerShard: 10)
        XCTAssertEqual(written, 25)
        XCTAssertEqual(skipped, 0)
        let packed = try PackedDataset(directory: out)
        XCTAssertEqual(packed.count, 25)
        XCTAssertEqual(packed.index.shards.map(\.count), [10, 10, 5])
        XCTAssertEqual(packed.classNames, source.classNames)
        for i in [0, 11, 24] {
            XCTAssertEqual(packed.label(at: i), source.label(at: i))
            XCTAssertEqual(try packed.image(at: i), try source.image(at: i), "same size: stored exactly")
        }
        try packed.verify()
        // An existing directory is never replaced without asking, and stays intact.
        XCTAssertThrowsError(try prepareDataset(source, size: 12, output: out, overwrite: false)) {
            XCTAssertTrue("\($0)".contains("already exists"))
        }
        XCTAssertEqual(try PackedDataset(directory: out).count, 25)
        // A damaged shard is found.
        let shard = out + "/shard-00001.bin"
        var bytes = [UInt8](FileManager.default.contents(atPath: shard)!)
        bytes[5] ^= 0xFF
        FileManager.default.createFile(atPath: shard, contents: Data(bytes))
        XCTAssertThrowsError(try PackedDataset(directory: out).verify()) { XCTAssertTrue("\($0)".contains("checksum")) }
    }

    func testFailedPreparationLeavesNothingBehind() throws {
        final class Broken: ImageDataset, @unchecked Sendable {
            var count: Int { 5 }
            var classNames: [String] { ["a"] }
            func label(at i: Int) -> Int { 0 }
            func image(at i: Int) throws -> RGBImage {
                if i == 4 { throw DatasetError("x.jpg: corrupt") }
                return RGBImage(width: 4, height: 4, pixels: [UInt8](repeating: 9, count: 48))
            }
        }
        let out = NSTemporaryDirectory() + "sparsetrain-packed-\(UUID().uuidString)"
        XCTAssertThrowsError(try prepareDataset(Broken(), size: 4, output: out, overwrite: false)) {
            XCTAssertTrue("\($0)".contains("x.jpg"))
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
        let parent = (out as NSString).deletingLastPathComponent
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: parent).filter { $0.hasPrefix((out as NSString).lastPathComponent) }
        XCTAssertEqual(leftovers, [])
        // With skipping, the bad image is counted and the rest written.
        defer { try? FileManager.default.removeItem(atPath: out) }
        let r = try prepareDataset(Broken(), size: 4, output: out, overwrite: false, skipBad: true)
        XCTAssertEqual(r.written, 4)
        XCTAssertEqual(r.skipped, 1)
    }

    func testTheSourceIsNeverTheOutputAndAllSkippedIsAnError() throws {
        let root = NSTemporaryDirectory() + "sparsetrain-src-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root + "/cls", withIntermediateDirectories: true)
        let jpg = try JPEG.encode(pixels: [UInt8](repeating: 100, count: 8 * 8 * 3), width: 8, height: 8)
        FileManager.default.createFile(atPath: root + "/cls/0.jpg", contents: Data(jpg))
        let folder = try ImageFolder(root: root)
        for (output, word) in [(root, "is the source"), (root + "/./", "is the source"), (root + "/cls/packed", "is inside"),
                               ((root as NSString).deletingLastPathComponent, "contains")] {
            XCTAssertThrowsError(try prepareDataset(folder, size: 8, output: output, overwrite: true)) {
                XCTAssertTrue("\($0)".contains(word), "\($0)")
            }
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/cls/0.jpg"), "the source is untouched")
        // Every image undecodable: skipping all of them writes nothing and says so.
        FileManager.default.createFile(atPath: root + "/cls/0.jpg", contents: Data(jpg.prefix(20)))
        let out = root + "-packed"
        defer { try? FileManager.default.removeItem(atPath: out) }
        XCTAssertThrowsError(try prepareDataset(try ImageFolder(root: root), size: 8, output: out, overwrite: false, skipBad: true)) {
            XCTAssertTrue("\($0)".contains("no image of 1 could be decoded"), "\($0)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: out))
    }
}
