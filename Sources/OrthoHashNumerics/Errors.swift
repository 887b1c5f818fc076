/// A problem the user can fix: a file, a flag, the data. It prints as one line naming the file
/// (when there is one), the problem, and where useful a hint. Programmer errors are preconditions.
public struct OrthoHashError: Error, CustomStringConvertible, Equatable {
    public var file: String?
    public var message: String
    public var hint: String?

    public init(_ message: String, file: String? = nil, hint: String? = nil) {
        self.message = message
        self.file = file
        self.hint = hint
    }

    public var description: String {
        var line = ""
        if let file { line += "\(file): " }
        line += message
        if let hint { line += " (\(hint))" }
        return line
    }
}
