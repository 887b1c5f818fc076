// Class labels of a split, as the loss and the metrics read them. Dimension: C = classes.

/// Class labels of a split.
public enum Labels: Equatable, Sendable {
    /// One class index per row.
    case single([Int32])
    /// (rows, C) multi-hot, 0 or 1.
    case multi(classes: Int, [UInt8])

    public var rows: Int {
        switch self {
        case .single(let l): return l.count
        case .multi(let c, let m): return c == 0 ? 0 : m.count / c
        }
    }

    public var isMulti: Bool { if case .multi = self { return true } else { return false } }

    /// The first `n` rows.
    public func prefix(_ n: Int) -> Labels {
        switch self {
        case .single(let l): return .single(Array(l.prefix(n)))
        case .multi(let c, let m): return .multi(classes: c, Array(m.prefix(n * c)))
        }
    }
}
