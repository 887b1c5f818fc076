/// A problem the user can fix: a file, a flag, the data. It prints as one line naming the file
/// (when there is one), the problem, and where useful a hint. Programmer errors are preconditions.
public struct OrthoHashError: Error, CustomStringConvertible, Equatable {
    public var file: String?
    public var message: String
    public var hint: String?
    /// Under MPI, every rank of the job met this same error at the same point (a verdict they
    /// share, or an error they agreed on), so one line from rank 0 tells it.
    public var everyRank = false

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

/// The product of sizes read from a file or a flag, or nil when it overflows Int (or a factor is negative).
public func checkedProduct(_ factors: [Int]) -> Int? {
    var product = 1
    for f in factors {
        guard f >= 0 else { return nil }
        let (p, overflow) = product.multipliedReportingOverflow(by: f)
        if overflow { return nil }
        product = p
    }
    return product
}
