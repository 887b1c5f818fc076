// swift-tools-version:5.9
import PackageDescription

let package = Package(
    name: "orthohash",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "orthohash", targets: ["orthohash"]),
        .library(name: "OrthoHash", targets: ["OrthoHash", "OrthoHashMPI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // System libraries, found through pkg-config; see MACHINE.md for the packages.
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // Flags-only system library: the include and link flags of Open MPI for the C shim.
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        // Plain-C functions over <mpi.h> (Swift cannot import MPI_COMM_WORLD and friends).
        .target(name: "CMPIShim", dependencies: ["CMPI"]),
        // Vectorised elementwise kernels with run-time CPU dispatch (no MPI, no BLAS).
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3", "-fno-math-errno", "-ffp-contract=off"])]),
        // Pure Swift core: tensors over flat buffers, layers, loss, data, metrics, trainer. No MPI.
        .target(
            name: "OrthoHash",
            dependencies: ["COpenBLAS", "CZlib", "CKernels"]
        ),
        // The MPI implementation of Collective.
        .target(name: "OrthoHashMPI", dependencies: ["OrthoHash", "CMPIShim"]),
        // The command-line tool: parsing and wiring only.
        .executableTarget(
            name: "orthohash",
            dependencies: ["OrthoHash", "OrthoHashMPI", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Temporary directories for the tests, removed when the test process exits.
        .target(name: "TestSupport", dependencies: ["OrthoHash"], path: "Tests/TestSupport"),
        .testTarget(name: "OrthoHashTests", dependencies: ["OrthoHash", "TestSupport"]),
        // Runs the built `orthohash` binary end to end (it depends on the tool so that it is built).
        .testTarget(name: "CLITests", dependencies: ["orthohash", "OrthoHash", "TestSupport"]),
        // Runs `mpirun -np N orthohash ...` as a subprocess.
        .testTarget(name: "MPITests", dependencies: ["orthohash", "OrthoHash", "TestSupport"]),
    ]
)
