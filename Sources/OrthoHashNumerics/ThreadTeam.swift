// The threads of the step's parallel passes: `parallel(parts) { i in ... }` runs part 0 on the
// calling thread and the others on workers that stay awake, spinning, for a while after each job.
//
// Why not Dispatch's concurrentPerform, which this replaces in the step: it wakes a sleeping
// worker for every call, and a convolution makes hundreds of short parallel passes per step (per
// chunk of images: im2col, the GEMM's parts, the output pass, the gradient's passes). On this
// machine's VM a wake-up cost tens of microseconds per pass; spinning workers take the next job
// within a microsecond. Measured with `orthohash bench --backbone cnn --threads 2`: see README's
// performance table.
//
// A worker spins `spinRounds` PAUSEs (about 100 microseconds) after its last job, then sleeps on
// a condition variable, so an idle run (evaluation, checkpoints, MPI waits) does not hold a core.
// One caller at a time: a call made while the team is busy (from another thread, or from inside
// a part) runs on Dispatch instead, so nesting and concurrent callers stay correct. Threads are
// pthreads (this module imports no Foundation).

import CKernels
import Dispatch
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

final class ThreadTeam: @unchecked Sendable {
    static let shared = ThreadTeam()
    /// PAUSEs a worker spins before it sleeps.
    static let spinRounds = 4096

    /// (job number << 8) | parts: workers read both in one load.
    private let state = Atomic<Int>(0)
    /// Parts not yet finished by workers.
    private let pending = Atomic<Int>(0)
    /// The job's body, valid while `pending` > 0 for the workers it names.
    private nonisolated(unsafe) var body: ((Int) -> Void)? = nil
    private let busy = Mutex<Bool>(false)
    /// Workers started; guarded by `busy` (only its holder starts workers).
    private nonisolated(unsafe) var workers = 0
    /// Sleeping workers, and the condition they sleep on; guarded by `mutex`.
    private nonisolated(unsafe) var sleepers = 0
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    private init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(wake, nil)
    }

    /// Runs body(0..<parts), part 0 on this thread; returns when every part has.
    func run(_ parts: Int, _ body: (Int) -> Void) {
        if parts <= 1 { if parts == 1 { body(0) }; return }
        let mine = parts < 256 && busy.withLock { taken -> Bool in
            if taken { return false }
            taken = true
            return true
        }
        guard mine else { return fallback(parts, body) }
        defer { busy.withLock { $0 = false } }
        while workers < parts - 1 { start(index: workers + 1) }
        withoutActuallyEscaping(body) { escaping in
            self.body = escaping
            pending.store(parts - 1, ordering: .relaxed)
            let job = (state.load(ordering: .relaxed) >> 8) + 1
            state.store(job << 8 | parts, ordering: .releasing)
            pthread_mutex_lock(mutex)
            if sleepers > 0 { pthread_cond_broadcast(wake) }
            pthread_mutex_unlock(mutex)
            escaping(0)
            while pending.load(ordering: .acquiring) > 0 { oh_cpu_relax() }
            self.body = nil
        }
    }

    /// A call while the team is busy (tests that train on several threads at once): Dispatch's.
    private func fallback(_ parts: Int, _ body: (Int) -> Void) {
        DispatchQueue.concurrentPerform(iterations: parts, execute: body)
    }

    private final class Start {
        let team: ThreadTeam, index: Int, seen: Int
        init(team: ThreadTeam, index: Int, seen: Int) { self.team = team; self.index = index; self.seen = seen }
    }

    private func start(index: Int) {
        let context = Unmanaged.passRetained(Start(team: self, index: index, seen: state.load(ordering: .acquiring))).toOpaque()
        #if canImport(Glibc)
        var thread = pthread_t()
        #else
        var thread: pthread_t? = nil
        #endif
        let created = pthread_create(&thread, nil, { context in
            let start = Unmanaged<Start>.fromOpaque(context!).takeRetainedValue()
            start.team.work(index: start.index, seen: start.seen)
        }, context)
        precondition(created == 0, "cannot start a thread of the step's team (pthread_create: \(created))")
        pthread_detach(thread)
        workers = index
    }

    private func work(index: Int, seen first: Int) -> Never {
        var seen = first
        while true {
            var now = state.load(ordering: .acquiring)
            var rounds = 0
            while now == seen && rounds < Self.spinRounds {
                oh_cpu_relax()
                rounds += 1
                now = state.load(ordering: .acquiring)
            }
            if now == seen {
                pthread_mutex_lock(mutex)
                sleepers += 1
                while state.load(ordering: .acquiring) == seen { pthread_cond_wait(wake, mutex) }
                sleepers -= 1
                pthread_mutex_unlock(mutex)
                now = state.load(ordering: .acquiring)
            }
            seen = now
            if index < now & 0xff {
                body!(index)
                pending.subtract(1, ordering: .releasing)
            }
        }
    }
}

/// body(0..<parts) on the step's threads (ThreadTeam), part 0 on the caller's.
@inline(__always)
func parallel(_ parts: Int, _ body: (Int) -> Void) {
    ThreadTeam.shared.run(parts, body)
}

/// body(unit) for each unit in 0..<units on up to `threads` of the step's threads, each thread
/// taking the next unit no thread has taken: a thread the machine slows down (another process on
/// its core, an interrupt) takes fewer units instead of holding the others at the pass's end.
/// Which thread runs a unit must not change its result.
func parallelUnits(_ units: Int, threads: Int, _ body: (Int) -> Void) {
    let parts = max(1, min(threads, units))
    if parts == 1 {
        for unit in 0..<units { body(unit) }
        return
    }
    let next = Atomic<Int>(0)
    parallel(parts) { _ in
        while true {
            let unit = next.add(1, ordering: .relaxed).oldValue
            if unit >= units { return }
            body(unit)
        }
    }
}
