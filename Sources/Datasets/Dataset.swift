/// An RGB image, interleaved (height, width, 3) bytes.
public struct RGBImage: Sendable, Equatable {
    public var width: Int
    public var height: Int
    public var pixels: [UInt8]

    public init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * 3, "pixel count does not match the size")
        self.width = width
        self.height = height
        self.pixels = pixels
    }
}

/// A labelled image collection. `image(at:)` may decode from disk; it is called from the
/// loader's threads, so implementations must be safe to call concurrently.
public protocol ImageDataset: AnyObject, Sendable {
    var count: Int { get }
    /// Class names; labels index this array.
    var classNames: [String] { get }
    func label(at index: Int) -> Int
    func image(at index: Int) throws -> RGBImage
    /// What to call image `index` in an error: its file when it has one.
    func name(at index: Int) -> String
}

extension ImageDataset {
    public func name(at index: Int) -> String { "image \(index)" }
}

extension DatasetError {
    /// This error about image `index` of `dataset`, naming the image unless it already does.
    public func naming(_ index: Int, of dataset: ImageDataset) -> DatasetError {
        let name = dataset.name(at: index)
        return description.contains(name) ? self : DatasetError("\(name): \(description)")
    }
}

/// A problem with data on disk or in a request, naming the file when there is one.
public struct DatasetError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ message: String) { description = message }
}
