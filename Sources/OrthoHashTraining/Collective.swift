// What training needs to exchange between the processes it runs in, beyond the gradients (see
// DataParallel): the communication primitives. The MPI implementation lives in OrthoHashMPI;
// `SingleProcess` is the one-process one.

import Foundation
import OrthoHashNumerics
import OrthoHashFormats

/// Communication primitives among the ranks of a job. Every rank calls each of them in the same
/// order; they also sum statistics (StatisticsReducer) for BatchNorm and the loss.
public protocol Collective: StatisticsReducer {
    var rank: Int { get }
    /// Rank `root`'s bytes on every rank.
    func broadcast(_ bytes: [UInt8], root: Int) -> [UInt8]
    /// Every rank's bytes, in rank order, on every rank.
    func allGather(_ bytes: [UInt8]) -> [[UInt8]]
    /// Ends every rank of the job now, printing `message` on stderr (prefixed with the rank).
    func abort(_ message: String, code: Int32) -> Never
    /// Labels later collectives with the training step, for the watchdog's messages.
    func labelStep(_ step: Int)
    /// What this rank does outside collectives from now on ("evaluating"), for the other ranks'
    /// watchdog messages.
    func setActivity(_ what: String)
    /// The next collective follows work that rank 0 does alone (reading or writing the run
    /// directory): it may wait as long as such work may take, not only the collective timeout.
    /// Every rank calls it at the same point.
    func allowCoordinatorWork()
    /// Returns when every rank has called it (the timeline's measure of waiting for the slowest rank).
    func barrier()
}

public extension Collective {
    var isCoordinator: Bool { rank == 0 }
    func labelStep(_ step: Int) {}
    func setActivity(_ what: String) {}
    func allowCoordinatorWork() {}
    func barrier() {}

    /// Runs `body` on every rank, and then makes sure the ranks agree on how it went: when it
    /// threw a user error on some rank, every rank throws one error naming what each failing
    /// rank met (`everyRank`: printed once). For work without collectives inside (checking
    /// settings, loading data), so that an error every rank meets is said once, and one that
    /// only some ranks meet (a file missing on one node) still stops them all.
    func agree<T>(_ body: () throws -> T) throws -> T {
        var outcome: Result<T, OrthoHashError>
        do { outcome = .success(try body()) } catch let error as OrthoHashError { outcome = .failure(error) }
        guard ranks > 1 else { return try outcome.get() }
        var mine: [UInt8] = []
        if case .failure(let error) = outcome { mine = Array("\(error)".utf8) }
        let all = allGather(mine)
        let failed = all.indices.filter { !all[$0].isEmpty }
        if failed.isEmpty { return try outcome.get() }
        var byMessage: [(String, [Int])] = []
        for r in failed {
            let text = String(decoding: all[r], as: UTF8.self)
            if let i = byMessage.firstIndex(where: { $0.0 == text }) { byMessage[i].1.append(r) } else { byMessage.append((text, [r])) }
        }
        var error: OrthoHashError
        if byMessage.count == 1 && failed.count == ranks {
            error = OrthoHashError(byMessage[0].0)
        } else {
            error = OrthoHashError(byMessage.map { text, who in
                (who.count == 1 ? "rank \(who[0])" : "ranks " + who.map(String.init).joined(separator: ", ")) + ": " + text
            }.joined(separator: "; "))
        }
        error.everyRank = true
        throw error
    }

    /// Runs `body` on rank 0 only (reading or writing the run directory) and lets the other
    /// ranks' next collective wait for it.
    func onCoordinator<T>(_ activity: String, _ body: () throws -> T) rethrows -> T? {
        defer { allowCoordinatorWork() }
        guard isCoordinator else { return nil }
        setActivity(activity)
        return try body()
    }
}

/// One process, no launcher: every collective is the identity.
public final class SingleProcess: Collective {
    public init() {}
    public var rank: Int { 0 }
    public var ranks: Int { 1 }
    public func sum(_ values: UnsafeMutablePointer<Double>, count: Int) {}
    public func broadcast(_ bytes: [UInt8], root: Int) -> [UInt8] { bytes }
    public func allGather(_ bytes: [UInt8]) -> [[UInt8]] { [bytes] }
    public func abort(_ message: String, code: Int32) -> Never {
        standardError(message)
        exit(code)
    }
}

/// A line on stderr, unbuffered (not held behind the progress bar). A stderr that cannot be
/// written (closed, /dev/full) loses the line: nothing else can be told.
public func standardError(_ line: String) {
    _ = writeAll(2, line + "\n")
}
