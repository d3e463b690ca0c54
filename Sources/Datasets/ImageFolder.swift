import Foundation

/// One directory per class (sorted names → labels 0, 1, …) of JPEG files, decoded on demand.
/// The layout of ImageNet, Tiny ImageNet and the CIFAR-10 copy in ../shared/data.
public final class ImageFolder: ImageDataset, @unchecked Sendable {
    public let root: String
    public let classNames: [String]
    public let files: [String]
    public let labels: [Int32]
    /// Smallest side wanted after decoding (enables libjpeg's scaled decoding).
    public let minimumSide: Int?

    public static let imageExtensions: Set<String> = ["jpg", "jpeg", "JPG", "JPEG"]

    /// Scans `root`. Fails when it is missing or empty, when a class folder has no image, or
    /// when a class folder holds a file that is not a JPEG by name.
    public init(root: String, minimumSide: Int? = nil) throws {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: root, isDirectory: &isDir), isDir.boolValue else {
            throw DatasetError("\(root): no such directory")
        }
        let entries = try fm.contentsOfDirectory(atPath: root).filter { !$0.hasPrefix(".") }.sorted()
        let classes = entries.filter { name in
            var d: ObjCBool = false
            return fm.fileExists(atPath: root + "/" + name, isDirectory: &d) && d.boolValue
        }
        guard !classes.isEmpty else { throw DatasetError("\(root): no class folders (expected one directory per class)") }
        var files: [String] = []
        var labels: [Int32] = []
        for (label, name) in classes.enumerated() {
            let dir = root + "/" + name
            let items = try fm.contentsOfDirectory(atPath: dir).filter { !$0.hasPrefix(".") }.sorted()
            for item in items {
                let ext = (item as NSString).pathExtension
                guard Self.imageExtensions.contains(ext) else {
                    throw DatasetError("\(dir)/\(item): not a JPEG file (class folders may hold only .jpg/.jpeg)")
                }
                files.append(dir + "/" + item)
                labels.append(Int32(label))
            }
            guard labels.last == Int32(label) else { throw DatasetError("\(dir): class folder has no images") }
        }
        self.root = root
        self.classNames = classes
        self.files = files
        self.labels = labels
        self.minimumSide = minimumSide
    }

    public var count: Int { files.count }
    public func label(at index: Int) -> Int { Int(labels[index]) }
    public func name(at index: Int) -> String { files[index] }

    public func image(at index: Int) throws -> RGBImage {
        let path = files[index]
        guard let data = FileManager.default.contents(atPath: path) else { throw DatasetError("\(path): cannot read") }
        return try JPEG.decode([UInt8](data), minimumSide: minimumSide, name: path)
    }
}
