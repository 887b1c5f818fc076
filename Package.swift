// swift-tools-version:5.9
import PackageDescription

// Modules, lowest first; each depends only on those above it (docs/ARCHITECTURE.md):
//   C targets            COpenBLAS, CZlib, CMPI, CTurboJPEG, CPNG (system libraries), CKernels, CImage, CMPIShim, CStop
//   OrthoHashNumerics    tensors over flat buffers, layers, loss, model, optimizer, codes, metrics
//   OrthoHashFormats     npy, IDX, safetensors, JSON, JPEG and PNG, atomic files, the checkpoint container
//   OrthoHashTraining    data, batches, data parallelism, trainer, evaluation, run directory, resume
//   OrthoHashMPI         the MPI back end of data parallelism
//   orthohash            the command-line tool (with the internal fault-injection target)
let package = Package(
    name: "orthohash",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "orthohash", targets: ["orthohash"]),
        .library(name: "OrthoHash", targets: ["OrthoHashNumerics", "OrthoHashFormats", "OrthoHashTraining", "OrthoHashMPI"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // System libraries, found through pkg-config (Debian: libopenblas-dev, zlib1g-dev, libopenmpi-dev).
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // Flags-only system library: the include and link flags of Open MPI for the C shim.
        .systemLibrary(name: "CMPI", pkgConfig: "ompi-c", providers: [.apt(["libopenmpi-dev"])]),
        // Image decoding by the libraries made for it (Debian: libturbojpeg0-dev, libpng-dev).
        .systemLibrary(name: "CTurboJPEG", pkgConfig: "libturbojpeg", providers: [.apt(["libturbojpeg0-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        // JPEG and PNG to RGB, and the transforms of torchvision on PIL images (Pillow's bilinear resampling).
        .target(name: "CImage", dependencies: ["CTurboJPEG", "CPNG"], exclude: ["README.md"], cSettings: [.unsafeFlags(["-O3"])]),
        // The MPI mechanisms in C over <mpi.h> (Swift cannot import MPI_COMM_WORLD and friends),
        // a file per concern; the policy that drives them is OrthoHashMPI's.
        .target(name: "CMPIShim", dependencies: ["CMPI"], exclude: ["README.md"]),
        // Stop requests: signal handlers that record SIGTERM, SIGINT and SIGUSR1 for the trainer.
        .target(name: "CStop", exclude: ["README.md"]),
        // Vectorised elementwise kernels with run-time CPU dispatch (no MPI, no BLAS).
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3", "-fno-math-errno", "-ffp-contract=off"])]),
        // The arithmetic: no files, clocks, environment or processes.
        .target(name: "OrthoHashNumerics", dependencies: ["COpenBLAS", "CKernels"], exclude: ["README.md"]),
        // Byte layouts of the files the system reads and writes.
        .target(name: "OrthoHashFormats", dependencies: ["OrthoHashNumerics", "CZlib", "CKernels", "CImage"], exclude: ["README.md"]),
        // A training run: data, the data-parallel protocol, the trainer, evaluation, run directory, resume.
        .target(name: "OrthoHashTraining", dependencies: ["OrthoHashNumerics", "OrthoHashFormats", "CKernels"], exclude: ["README.md"]),
        // The MPI back end of data-parallel training.
        .target(name: "OrthoHashMPI", dependencies: ["OrthoHashTraining", "OrthoHashNumerics", "CMPIShim"], exclude: ["README.md"]),
        // Faults injected by the tests through the environment; only the tool links it.
        .target(name: "OrthoHashFaultInjection", dependencies: ["OrthoHashTraining", "OrthoHashNumerics"]),
        // The command-line tool: parsing and wiring only.
        .executableTarget(
            name: "orthohash",
            dependencies: ["OrthoHashNumerics", "OrthoHashFormats", "OrthoHashTraining", "OrthoHashMPI", "OrthoHashFaultInjection",
                           "CStop", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // Temporary directories, fixtures and helpers shared by the test targets.
        .target(name: "TestSupport", dependencies: ["OrthoHashNumerics", "OrthoHashFormats", "OrthoHashTraining", "CZlib"], path: "Tests/TestSupport"),
        .testTarget(name: "NumericsTests", dependencies: ["OrthoHashNumerics", "CKernels", "TestSupport"]),
        .testTarget(name: "FormatsTests", dependencies: ["OrthoHashFormats", "OrthoHashNumerics", "CZlib", "CImage", "TestSupport"]),
        .testTarget(name: "TrainingTests", dependencies: ["OrthoHashTraining", "OrthoHashFormats", "OrthoHashNumerics", "CZlib", "TestSupport"]),
        // Runs the built `orthohash` binary end to end (it depends on the tool so that it is built).
        .testTarget(name: "CLITests", dependencies: ["orthohash", "OrthoHashTraining", "OrthoHashFormats", "OrthoHashNumerics", "TestSupport"]),
        // Runs `mpirun -np N orthohash ...` as a subprocess.
        .testTarget(name: "MPITests", dependencies: ["orthohash", "OrthoHashTraining", "OrthoHashFormats", "OrthoHashNumerics", "OrthoHashMPI", "TestSupport"]),
    ]
)
