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
}

/// A problem with data on disk or in a request, naming the file when there is one.
public struct DatasetError: Error, CustomStringConvertible, Equatable {
    public let description: String
    public init(_ message: String) { description = message }
}
