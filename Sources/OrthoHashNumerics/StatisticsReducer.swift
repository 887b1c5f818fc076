/// What the layers that normalise over the global batch need from the other ranks: BatchNorm's
/// per-channel sums and the imbalance loss's weight sum, summed over all ranks in place. The
/// numerics know nothing else of the processes they run in.
public protocol StatisticsReducer: AnyObject {
    /// Ranks whose local batches make up the global batch (1 in one process).
    var ranks: Int { get }
    /// In-place sum over all ranks; every rank calls it with the same `count`.
    func sum(_ values: UnsafeMutablePointer<Double>, count: Int)
}

public extension StatisticsReducer {
    func sum(_ values: inout [Double]) {
        let n = values.count
        values.withUnsafeMutableBufferPointer { sum($0.baseAddress!, count: n) }
    }
}

/// One process: the local batch is the global batch.
public final class LocalStatistics: StatisticsReducer {
    public init() {}
    public var ranks: Int { 1 }
    public func sum(_ values: UnsafeMutablePointer<Double>, count: Int) {}
}
