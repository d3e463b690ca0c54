import Foundation
import XCTest
@testable import Datasets

final class ReaderTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "sparsetrain-data-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func write(_ bytes: [UInt8], _ name: String) -> String {
        let path = dir + "/" + name
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    func testCIFAR10BinaryKeepsLabelsAndPlaneOrder() throws {
        // Two records: label, then R plane (all 10), G plane (all 20), B plane (pixel index % 256).
        var bytes: [UInt8] = []
        for label: UInt8 in [3, 7] {
            bytes.append(label)
            bytes += [UInt8](repeating: 10 + label, count: 1024)
            bytes += [UInt8](repeating: 20, count: 1024)
            bytes += (0..<1024).map { UInt8($0 % 256) }
        }
        let ds = try CIFARBinary.load(files: [write(bytes, "data_batch_1.bin")], variant: .cifar10)
        XCTAssertEqual(ds.count, 2)
        XCTAssertEqual(ds.labels, [3, 7])
        let img = try ds.image(at: 1)
        XCTAssertEqual(img.width, 32)
        // Pixel (row 1, col 2) = index 34: R 17, G 20, B 34.
        XCTAssertEqual(Array(img.pixels[(34 * 3)..<(34 * 3 + 3)]), [17, 20, 34])
        XCTAssertEqual(ds.classNames[3], "cat")
    }

    func testCIFAR100UsesFineOrCoarseLabels() throws {
        var bytes: [UInt8] = [4, 77]   // coarse 4, fine 77
        bytes += [UInt8](repeating: 1, count: 3072)
        let path = write(bytes, "train.bin")
        XCTAssertEqual(try CIFARBinary.load(files: [path], variant: .cifar100(fine: true)).labels, [77])
        XCTAssertEqual(try CIFARBinary.load(files: [path], variant: .cifar100(fine: false)).labels, [4])
    }

    func testCIFARFileOfWrongSizeIsRejectedWithItsName() {
        let path = write([UInt8](repeating: 0, count: 3073 + 5), "bad.bin")
        XCTAssertThrowsError(try CIFARBinary.load(files: [path], variant: .cifar10)) {
            XCTAssertTrue("\($0)".contains("bad.bin") && "\($0)".contains("multiple of the 3073-byte"), "\($0)")
        }
    }

    /// A smooth gradient image, so JPEG reproduces it closely.
    func gradient(_ w: Int, _ h: Int, tint: Int) -> [UInt8] {
        (0..<(w * h * 3)).map { i in
            let p = i / 3, c = i % 3
            return UInt8((p % w * 4 + p / w * 2 + c * 40 + tint) % 256)
        }
    }

    func testImageFolderMapsSortedClassesAndDecodesPixels() throws {
        let root = dir + "/folder"
        for (k, cls) in ["zebra", "ant", "moth"].enumerated() {
            try FileManager.default.createDirectory(atPath: root + "/" + cls, withIntermediateDirectories: true)
            for i in 0..<2 {
                let jpg = try JPEG.encode(pixels: gradient(24, 16, tint: k * 10 + i), width: 24, height: 16, quality: 95)
                FileManager.default.createFile(atPath: "\(root)/\(cls)/\(i).jpg", contents: Data(jpg))
            }
        }
        let ds = try ImageFolder(root: root)
        XCTAssertEqual(ds.classNames, ["ant", "moth", "zebra"])
        XCTAssertEqual((0..<ds.count).map { ds.label(at: $0) }, [0, 0, 1, 1, 2, 2])
        let img = try ds.image(at: 4)   // zebra/0.jpg, tint 0
        XCTAssertEqual(img.width, 24)
        XCTAssertEqual(img.height, 16)
        let expected = gradient(24, 16, tint: 0)
        let meanError = zip(img.pixels, expected).reduce(0.0) { $0 + abs(Double($1.0) - Double($1.1)) } / Double(expected.count)
        XCTAssertLessThan(meanError, 4, "JPEG tolerance")
    }

    func testGrayscaleJPEGBecomesRGB() throws {
        let gray = (0..<(8 * 8)).map { UInt8($0 * 3) }
        let jpg = try JPEG.encode(pixels: gray, width: 8, height: 8, components: 1, quality: 100)
        let img = try JPEG.decode(jpg)
        for p in 0..<64 {
            XCTAssertEqual(img.pixels[p * 3], img.pixels[p * 3 + 1])
            XCTAssertEqual(img.pixels[p * 3], img.pixels[p * 3 + 2])
            XCTAssertEqual(Double(img.pixels[p * 3]), Double(gray[p]), accuracy: 3)
        }
    }

    func testScaledDecodingKeepsTheMinimumSide() throws {
        let jpg = try JPEG.encode(pixels: gradient(200, 120, tint: 0), width: 200, height: 120)
        let img = try JPEG.decode(jpg, minimumSide: 50)
        XCTAssertEqual(img.width, 100)   // 1/2: 60 ≥ 50; 1/4 would give 30
        XCTAssertEqual(img.height, 60)
    }

    func testBadFoldersAndFilesAreNamedInErrors() throws {
        XCTAssertThrowsError(try ImageFolder(root: dir + "/missing")) { XCTAssertTrue("\($0)".contains("no such directory")) }
        XCTAssertThrowsError(try ImageFolder(root: dir)) { XCTAssertTrue("\($0)".contains("no class folders")) }
        try FileManager.default.createDirectory(atPath: dir + "/a", withIntermediateDirectories: true)
        XCTAssertThrowsError(try ImageFolder(root: dir)) { XCTAssertTrue("\($0)".contains("/a: class folder has no images"), "\($0)") }
        _ = write([1, 2, 3], "a/notes.txt")
        XCTAssertThrowsError(try ImageFolder(root: dir)) { XCTAssertTrue("\($0)".contains("notes.txt: not a JPEG"), "\($0)") }
        try FileManager.default.removeItem(atPath: dir + "/a/notes.txt")
        let jpg = try JPEG.encode(pixels: gradient(16, 16, tint: 0), width: 16, height: 16)
        _ = write(Array(jpg.prefix(jpg.count / 2)), "a/broken.jpg")
        let ds = try ImageFolder(root: dir)
        XCTAssertThrowsError(try ds.image(at: 0)) { XCTAssertTrue("\($0)".contains("broken.jpg"), "\($0)") }
    }

    func testImageSizeErrorsNameTheFile() throws {
        try FileManager.default.createDirectory(atPath: dir + "/c", withIntermediateDirectories: true)
        _ = write(try JPEG.encode(pixels: gradient(16, 16, tint: 0), width: 16, height: 16), "c/a.jpg")
        _ = write(try JPEG.encode(pixels: gradient(20, 12, tint: 0), width: 20, height: 12), "c/b.jpg")
        let folder = try ImageFolder(root: dir)
        XCTAssertThrowsError(try InMemoryDataset.load(folder, threads: 1)) {
            XCTAssertTrue("\($0)".contains("c/b.jpg is 20×12, expected 16×16"), "\($0)")
        }
        // A transform that cannot take an image: the loader names the file.
        let loader = DataLoader(dataset: folder, transform: ImageTransform(size: 16, augmentation: .none, normalization: .none),
                                depth: 1, threads: 1)
        XCTAssertThrowsError(try loader.makeBatch([1], epoch: 0, seed: 0)) {
            XCTAssertTrue("\($0)".contains("c/b.jpg: image is 20×12"), "\($0)")
        }
    }

    func testAJPEGTruncatedInsideItsScanDataIsAnError() throws {
        var pixels = [UInt8](repeating: 0, count: 64 * 64 * 3)
        for i in pixels.indices { pixels[i] = UInt8((i * 37 + (i / 192) * 11) % 256) }
        let jpg = try JPEG.encode(pixels: pixels, width: 64, height: 64, quality: 95)
        XCTAssertNoThrow(try JPEG.decode(jpg, name: "whole.jpg"))
        // Keep the headers (the first quarter holds them easily) and cut the entropy-coded data.
        let cut = Array(jpg.prefix(jpg.count * 3 / 4))
        XCTAssertThrowsError(try JPEG.decode(cut, name: "cut.jpg")) {
            XCTAssertTrue("\($0)".contains("cut.jpg") && "\($0)".contains("truncated image data"), "\($0)")
        }
    }
}
