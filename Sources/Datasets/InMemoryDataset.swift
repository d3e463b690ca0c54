import Dispatch
import Tensor

/// Images of one fixed size held in memory as bytes, (N, H, W, 3), with labels: CIFAR-10 is
/// 150 MB this way. Reading an image is a copy.
public final class InMemoryDataset: ImageDataset, @unchecked Sendable {
    public let classNames: [String]
    public let width: Int
    public let height: Int
    /// (N, H, W, 3) bytes.
    public let pixels: [UInt8]
    public let labels: [Int32]

    public init(width: Int, height: Int, pixels: [UInt8], labels: [Int32], classNames: [String]) {
        precondition(pixels.count == labels.count * width * height * 3, "pixels and labels disagree")
        self.width = width
        self.height = height
        self.pixels = pixels
        self.labels = labels
        self.classNames = classNames
    }

    public var count: Int { labels.count }
    public func label(at index: Int) -> Int { Int(labels[index]) }

    public func image(at index: Int) throws -> RGBImage {
        let n = width * height * 3
        return RGBImage(width: width, height: height, pixels: Array(pixels[(index * n)..<((index + 1) * n)]))
    }

    /// Decodes every image of `source` once (in parallel over `threads`), all of which must have
    /// the size `width × height`.
    public static func load(_ source: ImageDataset, threads: Int = 1) throws -> InMemoryDataset {
        guard source.count > 0 else { throw DatasetError("dataset is empty") }
        let first = try source.image(at: 0)
        let n = first.width * first.height * 3
        var pixels = [UInt8](repeating: 0, count: source.count * n)
        let labels = (0..<source.count).map { Int32(source.label(at: $0)) }
        let failure = ErrorBox()
        pixels.withUnsafeMutableBufferPointer { buf in
            let out = SendablePointer(buf.baseAddress!)
            parallelChunks(source.count, chunks: max(1, threads)) { range in
                for i in range where !failure.isSet {
                    do {
                        let img = try source.image(at: i)
                        guard img.width == first.width, img.height == first.height else {
                            throw DatasetError("\(source.name(at: i)) is \(img.width)×\(img.height), expected \(first.width)×\(first.height) like \(source.name(at: 0))")
                        }
                        img.pixels.withUnsafeBufferPointer { (out.pointer + i * n).update(from: $0.baseAddress!, count: n) }
                    } catch {
                        failure.set(error)
                    }
                }
            }
        }
        if let error = failure.error { throw error }
        return InMemoryDataset(width: first.width, height: first.height, pixels: pixels, labels: labels,
                               classNames: source.classNames)
    }
}

/// The first error raised by any of several threads.
final class ErrorBox: @unchecked Sendable {
    private let lock = DispatchQueue(label: "sparsetrain.errorbox")
    private var stored: Error?
    var isSet: Bool { lock.sync { stored != nil } }
    var error: Error? { lock.sync { stored } }
    func set(_ e: Error) { lock.sync { if stored == nil { stored = e } } }
}
