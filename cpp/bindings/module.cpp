// Copyright (c) hevit developers. MIT license.
//
// Binding only: every function here converts arguments, releases the GIL around the C++ call and
// converts the result. No logic lives here; see cpp/include/hevit for the documented API.
#include "hevit/encrypted_batch.h"
#include "hevit/inspection.h"
#include "hevit/errors.h"
#include "hevit/checksum.h"
#include "hevit/compact_batch.h"
#include "hevit/discrete_gaussian.h"
#include "hevit/linear_plan.h"
#include "hevit/mlp_plan.h"
#include "hevit/prng.h"
#include <cstring>
#include "hevit/params.h"
#include "hevit/public_context.h"
#include "hevit/secret_context.h"
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;
using namespace hevit;

namespace
{
    using DoubleArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

    CkksParams make_params(std::size_t n, const std::vector<int> &bits, int scale_bits, double max_norm)
    {
        CkksParams params;
        params.poly_modulus_degree = n;
        params.coeff_modulus_bits = bits;
        params.scale_bits = scale_bits;
        params.max_norm = max_norm;
        return params;
    }

    void check_matrix(const DoubleArray &array, const char *what)
    {
        if (array.ndim() != 2)
        {
            throw LayoutError(std::string(what) + " must be a 2-D array, got " + std::to_string(array.ndim()) + " dimensions");
        }
    }

    py::bytes to_py_bytes(std::string &&bytes)
    {
        return py::bytes(bytes.data(), bytes.size());
    }

    std::string_view view_of(const py::bytes &bytes)
    {
        char *data = nullptr;
        Py_ssize_t size = 0;
        if (PyBytes_AsStringAndSize(bytes.ptr(), &data, &size) != 0)
        {
            throw py::error_already_set();
        }
        return std::string_view(data, static_cast<std::size_t>(size));
    }

    /** A 32-byte key from Python bytes (ParameterError for another length). */
    std::array<std::uint8_t, 32> key_of(const py::bytes &bytes, const char *what)
    {
        const std::string_view view = view_of(bytes);
        if (view.size() != 32)
        {
            throw ParameterError(std::string(what) + " must be 32 bytes, got " + std::to_string(view.size()));
        }
        std::array<std::uint8_t, 32> key{};
        std::memcpy(key.data(), view.data(), key.size());
        return key;
    }

    py::array_t<double> decrypt_to_array(const SecretContext &sk, const EncryptedBatch &batch, int threads)
    {
        py::array_t<double> out({ batch.rows(), batch.cols() });
        double *ptr = out.mutable_data();
        {
            py::gil_scoped_release release;
            sk.decrypt(batch, ptr, threads);
        }
        return out;
    }

    std::shared_ptr<PublicContext> unconst(std::shared_ptr<const PublicContext> ptr)
    {
        return std::const_pointer_cast<PublicContext>(std::move(ptr));
    }

    void register_errors(py::module_ &m)
    {
        py::module_ errors = py::module_::import("hevit.errors");
        static py::handle parameter_error = py::object(errors.attr("ParameterError")).release();
        static py::handle value_range_error = py::object(errors.attr("ValueRangeError")).release();
        static py::handle layout_error = py::object(errors.attr("LayoutError")).release();
        static py::handle context_mismatch_error = py::object(errors.attr("ContextMismatchError")).release();
        static py::handle serialization_error = py::object(errors.attr("SerializationError")).release();
        static py::handle missing_key_error = py::object(errors.attr("MissingKeyError")).release();
        static py::handle secret_key_required_error = py::object(errors.attr("SecretKeyRequiredError")).release();
        static py::handle resource_error = py::object(errors.attr("ResourceError")).release();
        py::register_exception_translator([](std::exception_ptr p) {
            try
            {
                if (p)
                {
                    std::rethrow_exception(p);
                }
            }
            catch (const ParameterError &e)
            {
                PyErr_SetString(parameter_error.ptr(), e.what());
            }
            catch (const ValueRangeError &e)
            {
                PyErr_SetString(value_range_error.ptr(), e.what());
            }
            catch (const LayoutError &e)
            {
                PyErr_SetString(layout_error.ptr(), e.what());
            }
            catch (const ContextMismatchError &e)
            {
                PyErr_SetString(context_mismatch_error.ptr(), e.what());
            }
            catch (const SerializationError &e)
            {
                PyErr_SetString(serialization_error.ptr(), e.what());
            }
            catch (const MissingKeyError &e)
            {
                PyErr_SetString(missing_key_error.ptr(), e.what());
            }
            catch (const SecretKeyRequiredError &e)
            {
                PyErr_SetString(secret_key_required_error.ptr(), e.what());
            }
            catch (const ResourceError &e)
            {
                PyErr_SetString(resource_error.ptr(), e.what());
            }
        });
    }
} // namespace

PYBIND11_MODULE(_core, m)
{
    m.doc() = "hevit private C++ core over Microsoft SEAL 4.1 (CKKS). Use hevit.he instead.";
    register_errors(m);

    m.attr("SEAL_VERSION") = std::to_string(SEAL_VERSION_MAJOR) + "." + std::to_string(SEAL_VERSION_MINOR) + "." +
                             std::to_string(SEAL_VERSION_PATCH);
    // set by CMake (cmake/HevitSEAL.cmake): where this build's SEAL came from and how it is linked
    m.attr("SEAL_LINKAGE") = HEVIT_SEAL_LINKAGE;
    m.def("max_secure_coeff_modulus_bits", &max_secure_coeff_modulus_bits, py::arg("poly_modulus_degree"));
    m.def(
        "payload_checksum",
        [](const py::bytes &data, bool portable) {
            const std::string_view view = view_of(data);
            Checksum sum{};
            {
                py::gil_scoped_release release;
                sum = portable ? detail::payload_checksum_portable(view.data(), view.size())
                               : payload_checksum(view.data(), view.size());
            }
            return py::bytes(reinterpret_cast<const char *>(sum.data()), sum.size());
        },
        py::arg("data"), py::arg("portable") = false,
        "The wire format's 16-byte payload checksum (four CRC-32C lanes); portable=True skips the "
        "CPU's CRC instruction.");
    m.def(
        "representable_sigma", &DiscreteGaussian::representable_sigma, py::arg("sigma"),
        "The exact sigma of the discrete Gaussian flooding sampler for a requested one (rounded up to m * 2^e, "
        "m in [128, 256)).");
    m.def(
        "validate_params",
        [](std::size_t n, const std::vector<int> &bits, int scale_bits, double max_norm) {
            validate_params(make_params(n, bits, scale_bits, max_norm));
        },
        py::arg("poly_modulus_degree"), py::arg("coeff_modulus_bits"), py::arg("scale_bits"), py::arg("max_norm"));

    // Register every class before any method mentions it, so signatures name Python types.
    py::class_<PublicContext, std::shared_ptr<PublicContext>> public_context_class(m, "PublicContext");
    py::class_<SecretContext, std::shared_ptr<SecretContext>> secret_context_class(m, "SecretContext");
    py::class_<EncryptedBatch, std::shared_ptr<EncryptedBatch>> encrypted_batch_class(m, "EncryptedBatch");
    py::class_<CompactBatch, std::shared_ptr<CompactBatch>> compact_batch_class(m, "CompactBatch");
    py::class_<LinearPlan, std::shared_ptr<LinearPlan>> linear_plan_class(m, "LinearPlan");
    py::class_<MlpPlan, std::shared_ptr<MlpPlan>> mlp_plan_class(m, "MlpPlan");

    public_context_class
        .def_static(
            "from_bytes",
            [](const py::bytes &data) {
                const std::string_view view = view_of(data);
                std::shared_ptr<const PublicContext> ctx;
                {
                    py::gil_scoped_release release;
                    ctx = PublicContext::from_bytes(view);
                }
                return unconst(std::move(ctx));
            },
            py::arg("data"))
        .def("to_bytes", [](const PublicContext &self) {
            std::string out;
            {
                py::gil_scoped_release release;
                out = self.to_bytes();
            }
            return to_py_bytes(std::move(out));
        })
        .def_property_readonly("poly_modulus_degree", [](const PublicContext &c) { return c.params().poly_modulus_degree; })
        .def_property_readonly("coeff_modulus_bits", [](const PublicContext &c) { return c.params().coeff_modulus_bits; })
        .def_property_readonly("scale_bits", [](const PublicContext &c) { return c.params().scale_bits; })
        .def_property_readonly("max_norm", [](const PublicContext &c) { return c.params().max_norm; })
        .def_property_readonly("primes", [](const PublicContext &c) {
            std::vector<std::uint64_t> primes;
            for (const auto &q : c.seal_context().key_context_data()->parms().coeff_modulus())
            {
                primes.push_back(q.value());
            }
            return primes;
        })
        .def_property_readonly("rotation_steps", &PublicContext::rotation_steps)
        .def_property_readonly("conjugation", &PublicContext::has_conjugation)
        .def_property_readonly("relinearization", [](const PublicContext &c) { return c.relin_keys() != nullptr; })
        .def_property_readonly("slot_count", &PublicContext::slot_count)
        .def_property_readonly("params_fingerprint", [](const PublicContext &c) {
            return py::bytes(reinterpret_cast<const char *>(c.params_fingerprint().data()), c.params_fingerprint().size());
        })
        .def_property_readonly("keyset_id", [](const PublicContext &c) {
            return py::bytes(reinterpret_cast<const char *>(c.keyset_id().data()), c.keyset_id().size());
        })
        .def(
            "encrypt",
            [](std::shared_ptr<PublicContext> self, const DoubleArray &x, const std::string &layout, int threads) {
                check_matrix(x, "x");
                const Layout lay = parse_layout(layout);
                py::gil_scoped_release release;
                return EncryptedBatch::encrypt_public(
                    self, x.data(), static_cast<std::size_t>(x.shape(0)), static_cast<std::size_t>(x.shape(1)), lay, threads);
            },
            py::arg("x"), py::arg("layout"), py::arg("threads"));

    secret_context_class
        .def_static(
            "generate",
            [](std::size_t n, const std::vector<int> &bits, int scale_bits, double max_norm, const std::vector<int> &steps,
               bool conjugation, bool relinearization) {
                const CkksParams params = make_params(n, bits, scale_bits, max_norm);
                EvaluationKeySpec keys;
                keys.rotation_steps = steps;
                keys.conjugation = conjugation;
                keys.relinearization = relinearization;
                py::gil_scoped_release release;
                return SecretContext::generate(params, keys);
            },
            py::arg("poly_modulus_degree"), py::arg("coeff_modulus_bits"), py::arg("scale_bits"), py::arg("max_norm"),
            py::arg("rotation_steps"), py::arg("conjugation") = false, py::arg("relinearization") = false)
        .def("public_context", [](const SecretContext &self) { return unconst(self.public_context()); })
        .def(
            "encrypt",
            [](const SecretContext &self, const DoubleArray &x, const std::string &layout, int threads) {
                check_matrix(x, "x");
                const Layout lay = parse_layout(layout);
                py::gil_scoped_release release;
                return self.encrypt(
                    x.data(), static_cast<std::size_t>(x.shape(0)), static_cast<std::size_t>(x.shape(1)), lay, threads);
            },
            py::arg("x"), py::arg("layout"), py::arg("threads"))
        .def("decrypt", &decrypt_to_array, py::arg("batch"), py::arg("threads"))
        .def(
            "decrypt_flooded",
            [](const SecretContext &sk, const EncryptedBatch &batch, double sigma, const py::bytes &noise_key,
               int threads) {
                const auto key = key_of(noise_key, "noise_key");
                py::array_t<double> out({ batch.rows(), batch.cols() });
                double *ptr = out.mutable_data();
                {
                    py::gil_scoped_release release;
                    sk.decrypt_flooded(batch, sigma, key, ptr, threads);
                }
                return out;
            },
            py::arg("batch"), py::arg("sigma"), py::arg("noise_key"), py::arg("threads"))
        .def(
            "derive_key",
            [](const SecretContext &sk, const py::bytes &label) {
                const auto key = sk.derive_key(view_of(label));
                return py::bytes(reinterpret_cast<const char *>(key.data()), key.size());
            },
            py::arg("label"))
        .def(
            "decrypt_compact",
            [](const SecretContext &sk, const CompactBatch &batch, int threads) {
                py::array_t<double> out({ batch.rows(), batch.cols() });
                double *ptr = out.mutable_data();
                {
                    py::gil_scoped_release release;
                    sk.decrypt(batch, ptr, threads);
                }
                return out;
            },
            py::arg("batch"), py::arg("threads"))
        .def("to_bytes", [](const SecretContext &self) {
            std::string out;
            {
                py::gil_scoped_release release;
                out = self.to_bytes();
            }
            return to_py_bytes(std::move(out));
        })
        .def_static(
            "from_bytes",
            [](const py::bytes &data) {
                const std::string_view view = view_of(data);
                py::gil_scoped_release release;
                return SecretContext::from_bytes(view);
            },
            py::arg("data"));

    encrypted_batch_class
        .def_property_readonly("layout", [](const EncryptedBatch &b) { return std::string(layout_name(b.layout())); })
        .def_property_readonly("rows", &EncryptedBatch::rows)
        .def_property_readonly("cols", &EncryptedBatch::cols)
        .def_property_readonly("period", &EncryptedBatch::period)
        .def_property_readonly("norm_bound", &EncryptedBatch::norm_bound)
        .def_property_readonly("scale", &EncryptedBatch::scale)
        .def_property_readonly("prime_count", &EncryptedBatch::prime_count)
        .def_property_readonly("seeded", &EncryptedBatch::seeded)
        .def_property_readonly("seed_count", &EncryptedBatch::seed_count)
        .def_property_readonly(
            "seeds",
            [](const EncryptedBatch &b) {
                const auto &seeds = b.seeds();
                return py::bytes(
                    reinterpret_cast<const char *>(seeds.data()), seeds.size() * sizeof(seal::prng_seed_type));
            })
        .def_property_readonly("ciphertext_count", [](const EncryptedBatch &b) { return b.ciphertexts().size(); })
        .def_property_readonly("byte_size", &EncryptedBatch::byte_size)
        .def_property_readonly("context", [](const EncryptedBatch &b) { return unconst(b.context()); })
        .def(
            "to_bytes",
            [](const EncryptedBatch &self, int threads) {
                std::string out;
                {
                    py::gil_scoped_release release;
                    out = self.to_bytes(threads);
                }
                return to_py_bytes(std::move(out));
            },
            py::arg("threads"))
        .def_static(
            "from_bytes",
            [](const py::bytes &data, std::shared_ptr<PublicContext> context, int threads) {
                const std::string_view view = view_of(data);
                py::gil_scoped_release release;
                return EncryptedBatch::from_bytes(view, context, threads);
            },
            py::arg("data"), py::arg("context"), py::arg("threads"))
        .def_static(
            "peek",
            [](const py::bytes &data) {
                const BatchMetadata m = EncryptedBatch::peek(view_of(data));
                return py::make_tuple(
                    std::string(layout_name(m.layout)), m.seed_count, m.prime_count, m.rows, m.cols, m.period,
                    m.scale, m.norm_bound, m.ciphertext_count);
            },
            py::arg("data"),
            "(layout, seed_count, prime_count, rows, cols, period, scale, norm_bound, ciphertext_count) "
            "of serialized bytes, without the checksum pass or loading")
        .def_static(
            "sum",
            [](const std::vector<std::shared_ptr<EncryptedBatch>> &batches, int threads) {
                std::vector<const EncryptedBatch *> ptrs;
                for (const auto &b : batches)
                {
                    ptrs.push_back(b.get());
                }
                py::gil_scoped_release release;
                return EncryptedBatch::sum(ptrs, threads);
            },
            py::arg("batches"), py::arg("threads"));

    // Public-information views for security analysis, for tests and attack evaluations only
    // (tests/he, hevit.attacks.PublicAdversary): their sampling loops hold the GIL and they are no
    // part of the documented API.
    auto inspection = m.def_submodule(
        "inspection",
        "Test-only: coefficient-form views of public objects (what an adversary holding the public "
        "bytes can compute) for the security tests and hevit.attacks. Not part of hevit's API; the "
        "loops hold the GIL.");
    inspection.def(
        "ciphertext_coefficients",
        [](const EncryptedBatch &batch, std::size_t index) {
            std::vector<std::uint64_t> out;
            {
                py::gil_scoped_release release;
                out = Inspection::ciphertext_coefficients(batch, index);
            }
            return py::array_t<std::uint64_t>(out.size(), out.data());
        },
        py::arg("batch"), py::arg("index"));
    inspection.def(
        "plaintext_coefficients",
        [](const PublicContext &context, const DoubleArray &x, const std::string &layout, std::size_t index) {
            check_matrix(x, "x");
            const Layout lay = parse_layout(layout);
            std::vector<std::uint64_t> out;
            {
                py::gil_scoped_release release;
                out = Inspection::plaintext_coefficients(
                    context, x.data(), static_cast<std::size_t>(x.shape(0)), static_cast<std::size_t>(x.shape(1)),
                    lay, index);
            }
            return py::array_t<std::uint64_t>(out.size(), out.data());
        },
        py::arg("context"), py::arg("x"), py::arg("layout"), py::arg("index"));
    inspection.def("first_prime", &Inspection::first_prime, py::arg("context"));
    inspection.def(
        "shift_c1", &Inspection::shift_c1, py::arg("batch"), py::arg("coefficient"), py::arg("amount"));
    inspection.def(
        "decrypted_residues",
        [](const SecretContext &secret, const EncryptedBatch &batch, std::size_t index, double sigma,
           const py::bytes &noise_key) {
            const auto key = key_of(noise_key, "noise_key");
            std::vector<std::uint64_t> out;
            {
                py::gil_scoped_release release;
                out = Inspection::decrypted_residues(secret, batch, index, sigma, key);
            }
            return py::array_t<std::uint64_t>(out.size(), out.data());
        },
        py::arg("secret"), py::arg("batch"), py::arg("index"), py::arg("sigma"), py::arg("noise_key"));
    inspection.def(
        "discrete_gaussian_samples",
        [](double sigma, const py::bytes &key, std::uint32_t nonce_word, std::size_t count) {
            const auto k = key_of(key, "key");
            if (count > (std::size_t(1) << 26))
            {
                throw ResourceError("at most 2^26 samples per call");
            }
            std::vector<std::int64_t> out;
            {
                py::gil_scoped_release release;
                out = Inspection::discrete_gaussian_samples(sigma, k, nonce_word, count);
            }
            return py::array_t<std::int64_t>(out.size(), out.data());
        },
        py::arg("sigma"), py::arg("key"), py::arg("nonce_word"), py::arg("count"));
    inspection.def(
        "chacha20_block",
        [](const py::bytes &key, std::uint32_t n0, std::uint32_t n1, std::uint32_t n2, std::uint32_t counter) {
            const std::string_view k = view_of(key);
            if (k.size() != 32)
            {
                throw LayoutError("key must be 32 bytes");
            }
            ChaCha20Stream::Key key_bytes{};
            std::copy(k.begin(), k.end(), key_bytes.begin());
            std::string out(64, '\0');
            ChaCha20Stream::block(key_bytes, { n0, n1, n2 }, counter, reinterpret_cast<std::uint8_t *>(out.data()));
            return py::bytes(out);
        },
        py::arg("key"), py::arg("n0"), py::arg("n1"), py::arg("n2"), py::arg("counter"));
    inspection.def(
        "seed_expansion",
        [](std::shared_ptr<PublicContext> context, const py::bytes &seed) {
            const std::string_view sv = view_of(seed);
            if (sv.size() != sizeof(seal::prng_seed_type))
            {
                throw LayoutError("seed must be 64 bytes");
            }
            seal::prng_seed_type seed_words{};
            std::memcpy(seed_words.data(), sv.data(), sv.size());
            const auto cd = context->seal_context().first_context_data();
            std::vector<std::uint64_t> out(cd->parms().poly_modulus_degree() * cd->parms().coeff_modulus().size());
            ChaCha20Stream stream(detail::seed_key(seed_words), 1);
            detail::sample_uniform(stream, cd->parms(), out.data());
            return out;
        },
        py::arg("context"), py::arg("seed"));
    inspection.def(
        "noise_sample",
        [](std::shared_ptr<PublicContext> context, std::size_t polys) {
            const auto cd = context->seal_context().first_context_data();
            const std::size_t n = cd->parms().poly_modulus_degree();
            std::vector<std::int64_t> out;
            ChaCha20Stream stream(detail::fresh_key(), 0);
            std::vector<std::uint64_t> noise(n * cd->parms().coeff_modulus().size());
            const std::uint64_t q = cd->parms().coeff_modulus().front().value();
            for (std::size_t p = 0; p < polys; p++)
            {
                detail::sample_noise(stream, cd->parms(), noise.data());
                for (std::size_t i = 0; i < n; i++)
                {
                    out.push_back(noise[i] > q / 2 ? -static_cast<std::int64_t>(q - noise[i]) : static_cast<std::int64_t>(noise[i]));
                }
            }
            return out;
        },
        py::arg("context"), py::arg("polys"));

    compact_batch_class
        .def_static(
            "from_batch",
            [](const EncryptedBatch &batch, int threads) {
                py::gil_scoped_release release;
                return std::make_shared<CompactBatch>(CompactBatch::from_batch(batch, threads));
            },
            py::arg("batch"), py::arg("threads"))
        .def_static(
            "from_bytes",
            [](const py::bytes &data, std::shared_ptr<PublicContext> context) {
                const std::string_view view = view_of(data);
                py::gil_scoped_release release;
                return std::make_shared<CompactBatch>(CompactBatch::from_bytes(view, context));
            },
            py::arg("data"), py::arg("context"))
        .def("to_bytes", [](const CompactBatch &self) {
            std::string out;
            {
                py::gil_scoped_release release;
                out = self.to_bytes();
            }
            return to_py_bytes(std::move(out));
        })
        .def_property_readonly("rows", &CompactBatch::rows)
        .def_property_readonly("cols", &CompactBatch::cols)
        .def_property_readonly("bits", &CompactBatch::bits)
        .def_property_readonly("context", [](const CompactBatch &self) { return unconst(self.context()); });

    linear_plan_class
        .def_static(
            "rotation_steps_for",
            [](std::size_t n, const std::vector<int> &bits, int scale_bits, double max_norm, std::size_t in_dim,
               std::size_t out_dim, const std::string &layout) {
                return LinearPlan::rotation_steps(make_params(n, bits, scale_bits, max_norm), in_dim, out_dim, parse_layout(layout));
            },
            py::arg("poly_modulus_degree"), py::arg("coeff_modulus_bits"), py::arg("scale_bits"), py::arg("max_norm"),
            py::arg("in_dim"), py::arg("out_dim"), py::arg("layout"))
        .def_static(
            "compile",
            [](std::shared_ptr<PublicContext> context, const DoubleArray &weights, std::optional<DoubleArray> bias,
               const std::string &layout, double input_norm_bound, double max_abs_error) {
                check_matrix(weights, "weights");
                const auto out_dim = static_cast<std::size_t>(weights.shape(0));
                const auto in_dim = static_cast<std::size_t>(weights.shape(1));
                const double *bias_ptr = nullptr;
                if (bias)
                {
                    if (bias->ndim() != 1 || static_cast<std::size_t>(bias->shape(0)) != out_dim)
                    {
                        throw LayoutError(
                            "bias must have shape (" + std::to_string(out_dim) + ",) to match weights of shape (" +
                            std::to_string(out_dim) + ", " + std::to_string(in_dim) + ")");
                    }
                    bias_ptr = bias->data();
                }
                const Layout lay = parse_layout(layout);
                py::gil_scoped_release release;
                return std::make_shared<LinearPlan>(
                    context, weights.data(), out_dim, in_dim, bias_ptr, lay, input_norm_bound, max_abs_error);
            },
            py::arg("context"), py::arg("weights"), py::arg("bias"), py::arg("layout"), py::arg("input_norm_bound"),
            py::arg("max_abs_error") = 0.0)
        .def(
            "apply",
            [](const LinearPlan &self, const EncryptedBatch &batch, int threads) {
                py::gil_scoped_release release;
                return self.apply(batch, threads);
            },
            py::arg("batch"), py::arg("threads"))
        .def(
            "apply_compact",
            [](const LinearPlan &self, const EncryptedBatch &batch, int threads) {
                py::gil_scoped_release release;
                return self.apply_compact(batch, threads);
            },
            py::arg("batch"), py::arg("threads"))
        .def_property_readonly("layout", [](const LinearPlan &p) { return std::string(layout_name(p.layout())); })
        .def_property_readonly("in_dim", &LinearPlan::in_dim)
        .def_property_readonly("out_dim", &LinearPlan::out_dim)
        .def_property_readonly("rotation_steps", &LinearPlan::steps)
        .def_property_readonly("key_switches", &LinearPlan::key_switches)
        .def_property_readonly("weight_scale_bits", &LinearPlan::weight_scale_bits)
        .def_property_readonly("output_error_bounds", &LinearPlan::output_error_bounds)
        .def_property_readonly("baby_rotations", &LinearPlan::baby_rotations)
        .def_property_readonly("giant_rotations", &LinearPlan::giant_rotations)
        .def_property_readonly("fold_rotations", &LinearPlan::fold_rotations)
        .def_property_readonly("rescales", &LinearPlan::rescales)
        .def_property_readonly("input_norm_bound", &LinearPlan::input_norm_bound)
        .def_property_readonly("output_norm_bound", &LinearPlan::output_norm_bound);

    mlp_plan_class
        .def_static(
            "evaluation_keys_for",
            [](std::size_t n, const std::vector<int> &bits, int scale_bits, double max_norm, std::size_t in_dim,
               std::size_t hidden, std::size_t out_dim, const std::string &layout) {
                const auto keys =
                    MlpPlan::evaluation_keys(make_params(n, bits, scale_bits, max_norm), in_dim, hidden, out_dim, parse_layout(layout));
                return py::make_tuple(keys.rotation_steps, keys.conjugation, keys.relinearization);
            },
            py::arg("poly_modulus_degree"), py::arg("coeff_modulus_bits"), py::arg("scale_bits"), py::arg("max_norm"),
            py::arg("in_dim"), py::arg("hidden"), py::arg("out_dim"), py::arg("layout"))
        .def_static(
            "compile",
            [](std::shared_ptr<PublicContext> context, const DoubleArray &w1, const DoubleArray &b1, const DoubleArray &w2,
               const DoubleArray &b2, const std::string &layout, double input_norm_bound) {
                check_matrix(w1, "w1");
                check_matrix(w2, "w2");
                const auto hidden = static_cast<std::size_t>(w1.shape(0));
                const auto in_dim = static_cast<std::size_t>(w1.shape(1));
                const auto out_dim = static_cast<std::size_t>(w2.shape(0));
                if (static_cast<std::size_t>(w2.shape(1)) != hidden)
                {
                    throw LayoutError(
                        "w2 must have shape (out_dim, " + std::to_string(hidden) + ") to follow w1 of shape (" +
                        std::to_string(hidden) + ", " + std::to_string(in_dim) + ")");
                }
                if (b1.ndim() != 1 || static_cast<std::size_t>(b1.shape(0)) != hidden || b2.ndim() != 1 ||
                    static_cast<std::size_t>(b2.shape(0)) != out_dim)
                {
                    throw LayoutError(
                        "b1 must have shape (" + std::to_string(hidden) + ",) and b2 shape (" + std::to_string(out_dim) + ",)");
                }
                const Layout lay = parse_layout(layout);
                py::gil_scoped_release release;
                return std::make_shared<MlpPlan>(
                    context, w1.data(), hidden, in_dim, b1.data(), w2.data(), out_dim, b2.data(), lay, input_norm_bound);
            },
            py::arg("context"), py::arg("w1"), py::arg("b1"), py::arg("w2"), py::arg("b2"), py::arg("layout"),
            py::arg("input_norm_bound"))
        .def(
            "apply",
            [](const MlpPlan &self, const EncryptedBatch &batch, int threads) {
                py::gil_scoped_release release;
                return self.apply(batch, threads);
            },
            py::arg("batch"), py::arg("threads"))
        .def_property_readonly("layout", [](const MlpPlan &p) { return std::string(layout_name(p.layout())); })
        .def_property_readonly("in_dim", &MlpPlan::in_dim)
        .def_property_readonly("hidden", &MlpPlan::hidden)
        .def_property_readonly("out_dim", &MlpPlan::out_dim)
        .def_property_readonly("rotation_steps", &MlpPlan::rotation_steps)
        .def_property_readonly("key_switches", &MlpPlan::key_switches)
        .def_property_readonly("hidden_bound", &MlpPlan::hidden_bound)
        .def_property_readonly("input_norm_bound", &MlpPlan::input_norm_bound)
        .def_property_readonly("output_norm_bound", &MlpPlan::output_norm_bound)
        .def_property_readonly("first_weight_scale_bits", [](const MlpPlan &p) { return p.first().weight_scale_bits(); })
        .def_property_readonly("first_baby_rotations", [](const MlpPlan &p) { return p.first().baby_rotations(); })
        .def_property_readonly("second_weight_scale_bits", [](const MlpPlan &p) { return p.second().weight_scale_bits(); });
}
