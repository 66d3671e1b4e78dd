// RQ-VAE tokenizer: straight-through gradients of every parameter against finite differences of
// an independent double-precision reference, Sinkhorn-Knopp marginals and balance, training on
// real recommender embeddings (loss, codebook usage, collisions, index generation),
// determinism, checkpoint-shaped parameter names, and invalid options.
#include "core/rqvae.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "core/mlp.h"
#include "core/sinkhorn.h"
#include "gtest/gtest.h"
#include "io/vector_file.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::DataFile;

// ---------------------------------------------------------------------------------------------
// Double-precision reference of the model's loss, written independently of core/rqvae.cc.

double Act(Activation a, double v) {
  switch (a) {
    case Activation::kNone:
      return v;
    case Activation::kRelu:
      return v > 0 ? v : 0;
    case Activation::kLeakyRelu:
      return v > 0 ? v : 0.01 * v;
    case Activation::kTanh:
      return std::tanh(v);
    case Activation::kSigmoid:
      return 1 / (1 + std::exp(-v));
    case Activation::kGelu:
      return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0)));
  }
  return v;
}

// Parameters in double, in RqVae::Parameters() order.
struct RefParams {
  std::vector<std::vector<double>> tensors;
  std::vector<std::vector<int64_t>> shapes;
};

RefParams ToDouble(RqVae& model) {
  RefParams p;
  for (const RqVaeParameter& t : model.Parameters()) {
    if (t.buffer) continue;
    int64_t size = 1;
    for (int64_t s : t.shape) size *= s;
    p.tensors.emplace_back(t.data, t.data + size);
    p.shapes.push_back(t.shape);
  }
  return p;
}

// Tensors of an MLP of `layers` Linear layers: weight and bias each, and with bn the batch
// norm's weight and bias after every layer but the last.
int MlpTensors(int layers, bool bn) { return 2 * layers + (bn ? 2 * (layers - 1) : 0); }

// MLP over the tensors from `first` (weight out x in, bias out, then batch norm weight and bias
// with bn, on the batch's statistics) on rows x (n x in).
std::vector<double> RefMlp(const RefParams& p, int first, int layers, Activation act, bool bn,
                           std::vector<double> x, int64_t n) {
  int t = first;
  for (int i = 0; i < layers; ++i) {
    const std::vector<double>& w = p.tensors[t];
    const std::vector<double>& b = p.tensors[t + 1];
    const int64_t out = p.shapes[t][0];
    const int64_t in = p.shapes[t][1];
    t += 2;
    const bool last = i + 1 == layers;
    std::vector<double> y(static_cast<size_t>(n * out));
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t o = 0; o < out; ++o) {
        double s = b[o];
        for (int64_t j = 0; j < in; ++j) s += w[o * in + j] * x[r * in + j];
        y[r * out + o] = s;
      }
    }
    if (bn && !last) {
      const std::vector<double>& gamma = p.tensors[t];
      const std::vector<double>& beta = p.tensors[t + 1];
      t += 2;
      for (int64_t o = 0; o < out; ++o) {
        double mean = 0, var = 0;
        for (int64_t r = 0; r < n; ++r) mean += y[r * out + o] / n;
        for (int64_t r = 0; r < n; ++r)
          var += (y[r * out + o] - mean) * (y[r * out + o] - mean) / n;
        for (int64_t r = 0; r < n; ++r) {
          y[r * out + o] = (y[r * out + o] - mean) / std::sqrt(var + 1e-5) * gamma[o] + beta[o];
        }
      }
    }
    if (!last) {
      for (double& v : y) v = Act(act, v);
    }
    x = std::move(y);
  }
  return x;
}

double Mse(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  return s / static_cast<double>(a.size());
}

// Constants of the straight-through surrogate, from the unperturbed parameters: sg(x_q - z),
// sg(r_l) and sg(q_l) per level.
struct StopGradients {
  std::vector<double> offset;
  std::vector<std::vector<double>> r;
  std::vector<std::vector<double>> q;
};

struct RefModel {
  int encoder_layers;
  int64_t levels, e, n;
  Activation act;
  bool bn;
  double beta, weight;
  std::vector<double> x;
  std::vector<int32_t> codes;

  std::vector<double> Latent(const RefParams& p) const {
    return RefMlp(p, 0, encoder_layers, act, bn, x, n);
  }
  std::vector<double> Codeword(const RefParams& p, int64_t l) const {
    const std::vector<double>& cb = p.tensors[MlpTensors(encoder_layers, bn) + l];
    std::vector<double> q(static_cast<size_t>(n * e));
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t j = 0; j < e; ++j) q[i * e + j] = cb[codes[i * levels + l] * e + j];
    }
    return q;
  }
  StopGradients Stops(const RefParams& p) const {
    StopGradients s;
    std::vector<double> r = Latent(p);
    const std::vector<double> z = r;
    std::vector<double> sum(r.size(), 0.0);
    for (int64_t l = 0; l < levels; ++l) {
      s.r.push_back(r);
      s.q.push_back(Codeword(p, l));
      for (size_t j = 0; j < r.size(); ++j) {
        r[j] -= s.q[l][j];
        sum[j] += s.q[l][j];
      }
    }
    s.offset.resize(z.size());
    for (size_t j = 0; j < z.size(); ++j) s.offset[j] = sum[j] - z[j];
    return s;
  }
  // The loss whose plain gradient is the model's straight-through gradient; its value at the
  // parameters the stops came from is the model's loss.
  double Surrogate(const RefParams& p, const StopGradients& s) const {
    const std::vector<double> z = Latent(p);
    std::vector<double> dec_in(z.size());
    for (size_t j = 0; j < z.size(); ++j) dec_in[j] = z[j] + s.offset[j];
    const std::vector<double> out =
        RefMlp(p, MlpTensors(encoder_layers, bn) + static_cast<int>(levels), encoder_layers, act,
               bn, dec_in, n);
    double quant = 0;
    for (int64_t l = 0; l < levels; ++l) {
      const std::vector<double> q = Codeword(p, l);
      quant += Mse(q, s.r[l]) + beta * Mse(s.q[l], l == 0 ? z : s.r[l]);
    }
    return Mse(out, x) + weight * quant / static_cast<double>(levels);
  }
};

class GradientTest : public ::testing::TestWithParam<std::tuple<const char*, bool>> {};

TEST_P(GradientTest, EveryParameterMatchesCentralDifferences) {
  RqVaeOptions options;
  options.layers = {5, 4};
  options.e_dim = 3;
  options.num_emb_list = {4, 3};
  options.sk_epsilons = {};
  options.beta = 0.4;
  options.quant_loss_weight = 0.7;
  const auto [activation, bn] = GetParam();
  options.activation = activation;
  options.bn = bn;
  options.seed = 17;
  const int64_t d = 6;
  const int64_t n = 7;
  absl::StatusOr<RqVae> created = RqVae::Create(d, options);
  ASSERT_TRUE(created.ok()) << created.status();
  RqVae model = *std::move(created);
  std::mt19937_64 rng(5);
  std::vector<float> x(static_cast<size_t>(n * d));
  for (float& v : x) v = static_cast<float>(StandardNormal(rng));
  // Codebooks of the scale of the latents, so that the codebook terms are not negligible.
  for (int64_t l = 0; l < model.levels(); ++l) {
    for (float& v : model.codebook(l)) v = static_cast<float>(0.5 * StandardNormal(rng));
  }
  // Fixed codes (any valid ones: the gradient is taken with the codes held).
  std::vector<int32_t> codes(static_cast<size_t>(n * 2));
  for (int64_t i = 0; i < n; ++i) {
    codes[i * 2] = static_cast<int32_t>(i % 4);
    codes[i * 2 + 1] = static_cast<int32_t>((i * 2 + 1) % 3);
  }
  RqVaeGradients grads;
  const RqVaeLoss loss = model.Gradients(x.data(), n, codes.data(), &grads, 1);

  RefModel ref{.encoder_layers = 3,
               .levels = 2,
               .e = 3,
               .n = n,
               .act = *ParseActivation(activation),
               .bn = bn,
               .beta = 0.4,
               .weight = 0.7,
               .x = std::vector<double>(x.begin(), x.end()),
               .codes = codes};
  RefParams p = ToDouble(model);
  const StopGradients stops = ref.Stops(p);
  EXPECT_NEAR(loss.total, ref.Surrogate(p, stops), 1e-5 * ref.Surrogate(p, stops));

  // Analytic gradients in Parameters() order.
  std::vector<const std::vector<float>*> analytic;
  const auto add = [&analytic](const std::vector<Linear>& layers) {
    for (const Linear& g : layers) {
      analytic.push_back(&g.weight);
      analytic.push_back(&g.bias);
      if (!g.bn_weight.empty()) {
        analytic.push_back(&g.bn_weight);
        analytic.push_back(&g.bn_bias);
      }
    }
  };
  add(grads.encoder);
  for (const std::vector<float>& g : grads.codebooks) analytic.push_back(&g);
  add(grads.decoder);
  std::vector<RqVaeParameter> names = model.Parameters();
  std::erase_if(names, [](const RqVaeParameter& t) { return t.buffer; });
  ASSERT_EQ(analytic.size(), p.tensors.size());
  const double h = 1e-6;
  int checked = 0;
  for (size_t t = 0; t < p.tensors.size(); ++t) {
    ASSERT_EQ(analytic[t]->size(), p.tensors[t].size()) << names[t].name;
    double largest = 0;
    for (size_t j = 0; j < p.tensors[t].size(); ++j) {
      const double saved = p.tensors[t][j];
      p.tensors[t][j] = saved + h;
      const double up = ref.Surrogate(p, stops);
      p.tensors[t][j] = saved - h;
      const double down = ref.Surrogate(p, stops);
      p.tensors[t][j] = saved;
      const double fd = (up - down) / (2 * h);
      largest = std::max(largest, std::abs(fd));
      EXPECT_NEAR((*analytic[t])[j], fd, 1e-2 * std::abs(fd) + 2e-6)
          << names[t].name << "[" << j << "] activation " << activation << " bn " << bn;
      ++checked;
    }
    // Every tensor takes part in the loss (a zero gradient would check nothing), except a bias
    // the next batch norm cancels exactly: a Linear's followed by one, and without activation a
    // batch norm's whose next Linear is followed by one (a shift through linear maps).
    const auto one_d = [&names](size_t i) {
      return i < names.size() && names[i].shape.size() == 1;
    };
    const bool cancelled = bn && absl::EndsWith(names[t].name, ".bias") &&
                           (one_d(t + 1) || (std::string(activation) == "none" && t > 0 &&
                                             one_d(t - 1) && one_d(t + 3)));
    if (!cancelled) {
      EXPECT_GT(largest, 1e-4) << names[t].name;
    }
  }
  EXPECT_EQ(checked, 6 * 5 + 5 + 5 * 4 + 4 + 4 * 3 + 3 + 4 * 3 + 3 * 3 + 3 * 4 + 4 + 4 * 5 + 5 +
                         5 * 6 + 6 + (bn ? 2 * (5 + 4) + 2 * (4 + 5) : 0));
}

INSTANTIATE_TEST_SUITE_P(ActivationsAndBatchNorm, GradientTest,
                         ::testing::Combine(::testing::Values("relu", "leakyrelu", "tanh",
                                                              "sigmoid", "gelu", "none"),
                                            ::testing::Bool()));

TEST(RqVaeTest, BatchNormRunningStatisticsServeInference) {
  absl::StatusOr<Mlp> created = Mlp::Create({3, 4, 2}, Activation::kTanh, 0.0, 5, true);
  ASSERT_TRUE(created.ok());
  Mlp mlp = *std::move(created);
  ASSERT_EQ(mlp.layer(0).running_var.size(), 4u);
  EXPECT_TRUE(mlp.layer(1).bn_weight.empty());  // none after the last layer
  EXPECT_EQ(mlp.TorchModuleIndex(1), 5);        // Dropout, Linear, BatchNorm1d, Tanh, Dropout
  const std::vector<float> x = {0.3f, -1.2f, 0.8f, 0.1f, -0.4f, 0.9f, 1.5f, -0.7f, 0.2f};
  MlpCache cache;
  std::vector<float> trained(6);
  mlp.ForwardTrain(x.data(), 3, nullptr, &cache, trained.data(), 1);
  mlp.UpdateRunningStats(cache);
  for (int c = 0; c < 4; ++c) {
    EXPECT_FLOAT_EQ(mlp.layer(0).running_mean[c], 0.1f * cache.batch_mean[0][c]);
    EXPECT_FLOAT_EQ(mlp.layer(0).running_var[c], 0.9f + 0.1f * cache.batch_var[0][c] * 1.5f);
  }
  // Inference with running statistics equal to the batch's gives the training output.
  mlp.layer(0).running_mean = cache.batch_mean[0];
  mlp.layer(0).running_var = cache.batch_var[0];
  std::vector<float> inferred(6);
  mlp.Forward(x.data(), 3, inferred.data(), 1);
  for (int j = 0; j < 6; ++j) EXPECT_NEAR(inferred[j], trained[j], 1e-5) << j;
}

TEST(RqVaeTest, DropoutBackwardMatchesItsMask) {
  // With dropout, ForwardTrain's output and Backward's input gradient are those of the masked
  // network: check the input gradient of sum(out) against differences with the same mask.
  absl::StatusOr<Mlp> mlp = Mlp::Create({4, 6, 3}, Activation::kTanh, 0.5, 3);
  ASSERT_TRUE(mlp.ok());
  std::vector<float> x = {0.3f, -1.2f, 0.8f, 0.1f, -0.4f, 0.9f, 1.5f, -0.7f};
  std::mt19937_64 rng(9);
  MlpCache cache;
  std::vector<float> out(6);
  mlp->ForwardTrain(x.data(), 2, &rng, &cache, out.data(), 1);
  int dropped = 0;
  for (const auto& mask : cache.masks)
    dropped += static_cast<int>(std::count(mask.begin(), mask.end(), 0));
  EXPECT_GT(dropped, 0);
  std::vector<float> ones(6, 1.0f);
  std::vector<Linear> grads;
  std::vector<float> grad_in(8);
  mlp->Backward(&cache, ones.data(), &grads, grad_in.data(), 1);
  for (size_t j = 0; j < x.size(); ++j) {
    const float h = 1e-2f;
    double sums[2];
    for (int s = 0; s < 2; ++s) {
      std::vector<float> xp = x;
      xp[j] += s == 0 ? h : -h;
      std::mt19937_64 same(9);  // the same masks
      MlpCache c;
      std::vector<float> o(6);
      mlp->ForwardTrain(xp.data(), 2, &same, &c, o.data(), 1);
      sums[s] = 0;
      for (float v : o) sums[s] += v;
    }
    EXPECT_NEAR(grad_in[j], (sums[0] - sums[1]) / (2 * h), 2e-2) << j;
  }
}

// ---------------------------------------------------------------------------------------------
// Sinkhorn-Knopp.

std::vector<float> RandomCosts(int64_t n, int64_t k, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> c(static_cast<size_t>(n * k));
  for (float& v : c) v = static_cast<float>(std::abs(StandardNormal(rng)));
  return c;
}

// Largest deviation of row sums from 1/n and column sums from 1/k.
std::pair<double, double> MarginalErrors(const std::vector<double>& plan, int64_t n, int64_t k) {
  double row_error = 0;
  std::vector<double> columns(static_cast<size_t>(k), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    double row = 0;
    for (int64_t j = 0; j < k; ++j) {
      row += plan[i * k + j];
      columns[j] += plan[i * k + j];
    }
    row_error = std::max(row_error, std::abs(row - 1.0 / n));
  }
  double column_error = 0;
  for (double c : columns) column_error = std::max(column_error, std::abs(c - 1.0 / k));
  return {row_error, column_error};
}

TEST(SinkhornTest, MarginalsApproachUniform) {
  const int64_t n = 60, k = 12;
  const std::vector<float> costs = RandomCosts(n, k, 1);
  auto few = SinkhornPlan(costs.data(), n, k, {.epsilon = 0.1, .iterations = 2});
  auto many = SinkhornPlan(costs.data(), n, k, {.epsilon = 0.1, .iterations = 300});
  ASSERT_TRUE(few.ok() && many.ok());
  const auto [few_rows, few_columns] = MarginalErrors(*few, n, k);
  const auto [rows, columns] = MarginalErrors(*many, n, k);
  EXPECT_LT(columns, 1e-12);  // the last normalisation is over columns
  EXPECT_LT(few_columns, 1e-12);
  EXPECT_LT(rows, 1e-6 / n);  // rows converge with the iterations
  EXPECT_GT(few_rows, 10 * rows);
}

TEST(SinkhornTest, LargeEpsilonGivesNearUniformPlan) {
  const int64_t n = 40, k = 8;
  const std::vector<float> costs = RandomCosts(n, k, 2);
  auto plan = SinkhornPlan(costs.data(), n, k, {.epsilon = 1e4, .iterations = 20});
  ASSERT_TRUE(plan.ok());
  for (double v : *plan) EXPECT_NEAR(v * n * k, 1.0, 1e-3);
  // A small epsilon follows the costs instead: far from uniform.
  auto sharp = SinkhornPlan(costs.data(), n, k, {.epsilon = 0.01, .iterations = 20});
  ASSERT_TRUE(sharp.ok());
  double spread = 0;
  for (double v : *sharp) spread = std::max(spread, std::abs(v * n * k - 1.0));
  EXPECT_GT(spread, 0.5);
}

TEST(SinkhornTest, BalancesSkewedSetBetterThanNearest) {
  // 400 points in 2-D, 80% of them around code 0; 8 codes on a circle and one at the centre.
  const int64_t n = 400, k = 8;
  std::mt19937_64 rng(4);
  std::vector<float> codes(k * 2);
  for (int64_t j = 0; j < k; ++j) {
    codes[j * 2] = static_cast<float>(std::cos(2 * M_PI * j / k));
    codes[j * 2 + 1] = static_cast<float>(std::sin(2 * M_PI * j / k));
  }
  std::vector<float> costs(static_cast<size_t>(n * k));
  for (int64_t i = 0; i < n; ++i) {
    const bool skewed = i % 5 != 0;
    const double angle = skewed ? 0.4 * StandardNormal(rng) : 2 * M_PI * (i / 5) / (n / 5);
    const double px = std::cos(angle) + 0.2 * StandardNormal(rng);
    const double py = std::sin(angle) + 0.2 * StandardNormal(rng);
    for (int64_t j = 0; j < k; ++j) {
      costs[i * k + j] = static_cast<float>((px - codes[j * 2]) * (px - codes[j * 2]) +
                                            (py - codes[j * 2 + 1]) * (py - codes[j * 2 + 1]));
    }
  }
  std::vector<int64_t> nearest_sizes(k, 0), sinkhorn_sizes(k, 0);
  double nearest_cost = 0, sinkhorn_cost = 0;
  std::vector<int32_t> labels(n);
  ASSERT_TRUE(
      SinkhornAssign(costs.data(), n, k, {.epsilon = 0.05, .iterations = 100}, labels.data()).ok());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t best = std::min_element(costs.begin() + i * k, costs.begin() + (i + 1) * k) -
                         (costs.begin() + i * k);
    ++nearest_sizes[best];
    nearest_cost += costs[i * k + best];
    ++sinkhorn_sizes[labels[i]];
    sinkhorn_cost += costs[i * k + labels[i]];
  }
  const int64_t nearest_max = *std::max_element(nearest_sizes.begin(), nearest_sizes.end());
  const int64_t sinkhorn_max = *std::max_element(sinkhorn_sizes.begin(), sinkhorn_sizes.end());
  EXPECT_GT(nearest_max, n / 3);             // the skew is real
  EXPECT_LT(sinkhorn_max, nearest_max / 2);  // and Sinkhorn spreads it
  EXPECT_LE(sinkhorn_max, 2 * n / k);
  EXPECT_GT(sinkhorn_cost, nearest_cost);  // at a price in distance, as it must
}

TEST(SinkhornTest, TinyEpsilonWithAFarCodeStaysFinite) {
  // Code 3 is far from every item: at epsilon 1e-4 its kernel column underflows to 0 and the
  // scaling form cannot run; the log-domain form still gives a plan with exact column sums.
  const int64_t n = 6, k = 4;
  std::vector<float> costs = RandomCosts(n, k, 3);
  for (int64_t i = 0; i < n; ++i) costs[i * k + 3] = 100.0f;
  auto plan = SinkhornPlan(costs.data(), n, k, {.epsilon = 1e-4, .iterations = 50});
  ASSERT_TRUE(plan.ok());
  for (double v : *plan) ASSERT_TRUE(std::isfinite(v));
  EXPECT_LT(MarginalErrors(*plan, n, k).second, 1e-9);
}

TEST(SinkhornTest, InvalidArguments) {
  const std::vector<float> costs = RandomCosts(3, 2, 1);
  EXPECT_TRUE(absl::StrContains(SinkhornPlan(costs.data(), 3, 2, {.epsilon = 0}).status().message(),
                                "sk_epsilon"));
  EXPECT_TRUE(absl::StrContains(
      SinkhornPlan(costs.data(), 3, 2, {.iterations = 0}).status().message(), "sk_iters"));
  std::vector<float> bad = costs;
  bad[3] = std::nanf("");
  const absl::Status s = SinkhornPlan(bad.data(), 3, 2, {}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(s.message(), "row 1, column 1")) << s;
}

// ---------------------------------------------------------------------------------------------
// Training on real embeddings.

Matrix Beauty(int64_t rows) {
  absl::StatusOr<Matrix> m = ReadMatrix(DataFile("sasrec/Beauty-32d-sasrec.npy"), rows);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? *std::move(m) : Matrix{};
}

RqVaeOptions SmallOptions() {
  RqVaeOptions o;
  o.layers = {128, 64};
  o.e_dim = 16;
  o.num_emb_list = {32, 32, 32};
  o.sk_epsilons = {0.0, 0.0, 0.003};
  o.epochs = 12;
  o.batch_size = 256;
  o.warmup_epochs = 1;
  o.lr = 2e-3;
  o.seed = 11;
  o.num_threads = 2;
  return o;
}

TEST(RqVaeTrainTest, LearnsBeautyEmbeddings) {
  const Matrix data = Beauty(3000);
  ASSERT_EQ(data.dim, 32);
  const RqVaeOptions options = SmallOptions();
  std::vector<RqVaeEpochReport> seen;
  auto trained =
      TrainRqVae(data.values.data(), data.rows, data.dim, options, [&](const RqVaeEpochReport& r) {
        seen.push_back(r);
        return true;
      });
  ASSERT_TRUE(trained.ok()) << trained.status();
  ASSERT_EQ(trained->epochs.size(), 12u);
  ASSERT_EQ(seen.size(), 12u);
  const RqVaeEpochReport& first = trained->epochs.front();
  const RqVaeEpochReport& last = trained->epochs.back();
  for (const RqVaeEpochReport& r : trained->epochs) {
    std::printf(
        "epoch %d loss %.5f recon %.5f quant %.5f collisions %.4f used %lld/%lld/%lld "
        "revived %lld %.3fs\n",
        r.epoch, r.loss.total, r.loss.recon, r.loss.quant, r.collision_rate,
        static_cast<long long>(r.codes_used[0]), static_cast<long long>(r.codes_used[1]),
        static_cast<long long>(r.codes_used[2]), static_cast<long long>(r.revived), r.seconds);
  }
  // The reconstruction is what training lowers. (The total loss is not: as in the seed's model,
  // the latents' scale is free and grows, and the quantisation terms grow with it.) Baseline:
  // predicting every item by the mean item, the mean variance of a component.
  double variance = 0;
  for (int64_t j = 0; j < data.dim; ++j) {
    double sum = 0, squares = 0;
    for (int64_t i = 0; i < data.rows; ++i) {
      sum += data.values[i * data.dim + j];
      squares += static_cast<double>(data.values[i * data.dim + j]) * data.values[i * data.dim + j];
    }
    variance += (squares - sum * sum / data.rows) / data.rows / data.dim;
  }
  std::printf("mean component variance %.6f\n", variance);
  EXPECT_LT(last.loss.recon, 0.6 * first.loss.recon);
  EXPECT_LT(last.loss.recon, 0.6 * variance);
  for (int64_t l = 0; l < 3; ++l) EXPECT_GE(last.codes_used[l], 28) << "level " << l;
  EXPECT_LT(last.collision_rate, 0.15);

  // Encode gives the codes the evaluation counted.
  const RqVae& model = trained->model;
  std::vector<int32_t> codes(static_cast<size_t>(data.rows * 3));
  model.Encode(data.values.data(), data.rows, codes.data());
  EXPECT_DOUBLE_EQ(CollisionRate(codes.data(), data.rows, 3), last.collision_rate);

  // Decode reconstructs from the codes alone about as well as training's reconstruction did.
  std::vector<float> decoded(data.values.size());
  model.Decode(codes.data(), data.rows, decoded.data());
  double decoded_mse = 0;
  for (size_t i = 0; i < decoded.size(); ++i) {
    decoded_mse += (decoded[i] - data.values[i]) * (decoded[i] - data.values[i]);
  }
  decoded_mse /= static_cast<double>(decoded.size());
  std::printf("decoded mse %.6f\n", decoded_mse);
  EXPECT_LT(decoded_mse, 0.6 * variance);

  // The serving snapshot gives the same codes and latents, one row at a time as in a batch, and
  // does not follow later changes of the model.
  const RqVaeEncoder encoder(model);
  std::vector<float> latents(static_cast<size_t>(data.rows * 16));
  model.EncodeLatent(data.values.data(), data.rows, latents.data());
  RqVae changed = model;
  std::fill(changed.codebook(0).begin(), changed.codebook(0).end(), 0.0f);
  for (int64_t i = 0; i < 200; ++i) {
    int32_t one[3];
    float latent[16];
    encoder.Encode(data.values.data() + i * data.dim, 1, one, latent);
    for (int l = 0; l < 3; ++l) ASSERT_EQ(one[l], codes[i * 3 + l]) << "row " << i;
    for (int j = 0; j < 16; ++j) ASSERT_EQ(latent[j], latents[i * 16 + j]) << "row " << i;
  }

  // Index generation: fewer collisions, the exact free-code mode no worse than the seed's.
  auto exact = GenerateIndices(model, data.values.data(), data.rows);
  auto seed = GenerateIndices(model, data.values.data(), data.rows,
                              {.mode = GenerateIndicesOptions::Mode::kSeedSinkhorn});
  ASSERT_TRUE(exact.ok() && seed.ok());
  std::printf("collisions before %lld, after exact %lld (moved %lld), after seed's %lld\n",
              static_cast<long long>(exact->collisions_before),
              static_cast<long long>(exact->collisions_after), static_cast<long long>(exact->moved),
              static_cast<long long>(seed->collisions_after));
  EXPECT_EQ(exact->collisions_before,
            static_cast<int64_t>(std::lround(last.collision_rate * data.rows)));
  EXPECT_GT(exact->collisions_before, 0);
  EXPECT_LT(exact->collisions_after, exact->collisions_before / 4);
  EXPECT_LE(exact->collisions_after, seed->collisions_after);
  EXPECT_DOUBLE_EQ(CollisionRate(exact->codes.data(), data.rows, 3),
                   static_cast<double>(exact->collisions_after) / data.rows);
  for (int64_t i = 0; i < data.rows; ++i) {
    // Only the last level moves.
    EXPECT_EQ(exact->codes[i * 3], codes[i * 3]);
    EXPECT_EQ(exact->codes[i * 3 + 1], codes[i * 3 + 1]);
  }
}

TEST(RqVaeTrainTest, SameSeedSameModelWhateverTheThreads) {
  const Matrix data = Beauty(1200);
  RqVaeOptions options = SmallOptions();
  options.epochs = 3;
  options.dropout_prob = 0.1;
  options.num_threads = 1;
  auto a = TrainRqVae(data.values.data(), data.rows, data.dim, options);
  options.num_threads = 2;
  auto b = TrainRqVae(data.values.data(), data.rows, data.dim, options);
  options.seed = 12;
  auto c = TrainRqVae(data.values.data(), data.rows, data.dim, options);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  std::vector<int32_t> ca(data.rows * 3), cb(data.rows * 3), cc(data.rows * 3);
  a->model.Encode(data.values.data(), data.rows, ca.data());
  b->model.Encode(data.values.data(), data.rows, cb.data());
  c->model.Encode(data.values.data(), data.rows, cc.data());
  EXPECT_EQ(ca, cb);
  EXPECT_NE(ca, cc);
  const std::vector<RqVaeParameter> pa = a->model.Parameters();
  const std::vector<RqVaeParameter> pb = b->model.Parameters();
  for (size_t t = 0; t < pa.size(); ++t) {
    int64_t size = 1;
    for (int64_t s : pa[t].shape) size *= s;
    EXPECT_TRUE(std::equal(pa[t].data, pa[t].data + size, pb[t].data)) << pa[t].name;
  }
}

TEST(RqVaeTrainTest, TrainsWithBatchNorm) {
  const Matrix data = Beauty(1500);
  RqVaeOptions options = SmallOptions();
  // Steps enough for the running statistics (momentum 0.1, from variance 1) to reach the
  // batches' (these embeddings' variance is ~0.003): evaluation runs on them.
  options.epochs = 8;
  options.batch_size = 128;
  options.bn = true;
  auto trained = TrainRqVae(data.values.data(), data.rows, data.dim, options);
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_LT(trained->epochs.back().loss.recon, 0.1 * trained->epochs.front().loss.recon);
  EXPECT_GE(trained->epochs.back().codes_used[0], 28);
  // Training moved the running statistics away from their initial 0 / 1.
  EXPECT_NE(trained->model.encoder().layer(0).running_mean[0], 0.0f);
}

TEST(RqVaeTrainTest, KeepsTheBestCollisionEpoch) {
  const Matrix data = Beauty(1500);
  RqVaeOptions options = SmallOptions();
  options.epochs = 6;
  options.large_scale_kmeans = true;
  options.keep = RqVaeOptions::Keep::kBestCollision;
  auto trained = TrainRqVae(data.values.data(), data.rows, data.dim, options);
  ASSERT_TRUE(trained.ok()) << trained.status();
  double best = 1;
  for (const RqVaeEpochReport& r : trained->epochs) best = std::min(best, r.collision_rate);
  EXPECT_EQ(trained->epochs[trained->model_epoch].collision_rate, best);
  std::vector<int32_t> codes(data.rows * 3);
  trained->model.Encode(data.values.data(), data.rows, codes.data());
  EXPECT_DOUBLE_EQ(CollisionRate(codes.data(), data.rows, 3), best);
}

TEST(RqVaeTest, ParametersCarryTorchNamesAndShapes) {
  RqVaeOptions options;
  options.layers = {512, 256, 128, 64};
  auto model = RqVae::Create(32, options);
  ASSERT_TRUE(model.ok());
  const std::vector<RqVaeParameter> params = model->Parameters();
  ASSERT_EQ(params.size(), 10u + 3u + 10u);
  EXPECT_EQ(params[0].name, "encoder.mlp_layers.1.weight");
  EXPECT_EQ(params[0].shape, (std::vector<int64_t>{512, 32}));
  EXPECT_EQ(params[3].name, "encoder.mlp_layers.4.bias");
  EXPECT_EQ(params[3].shape, (std::vector<int64_t>{256}));
  EXPECT_EQ(params[8].name, "encoder.mlp_layers.13.weight");
  EXPECT_EQ(params[8].shape, (std::vector<int64_t>{32, 64}));
  EXPECT_EQ(params[10].name, "rq.vq_layers.0.embedding.weight");
  EXPECT_EQ(params[12].shape, (std::vector<int64_t>{256, 32}));
  EXPECT_EQ(params[13].name, "decoder.mlp_layers.1.weight");
  EXPECT_EQ(params[13].shape, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(params[22].name, "decoder.mlp_layers.13.bias");
  EXPECT_EQ(params[22].shape, (std::vector<int64_t>{32}));
  // With batch norm: Dropout, Linear, BatchNorm1d, ReLU per layer; the running statistics are
  // listed as buffers.
  options.bn = true;
  auto normed = RqVae::Create(32, options);
  ASSERT_TRUE(normed.ok()) << normed.status();
  const std::vector<RqVaeParameter> bn_params = normed->Parameters();
  ASSERT_EQ(bn_params.size(), 2u * (10 + 4 * 4) + 3);
  EXPECT_EQ(bn_params[2].name, "encoder.mlp_layers.2.weight");
  EXPECT_EQ(bn_params[5].name, "encoder.mlp_layers.2.running_var");
  EXPECT_TRUE(bn_params[5].buffer);
  EXPECT_FALSE(bn_params[3].buffer);
  EXPECT_EQ(bn_params[6].name, "encoder.mlp_layers.5.weight");
  EXPECT_EQ(bn_params.back().name, "decoder.mlp_layers.17.bias");
  options.bn = false;
  // Without an activation module the seed's Sequential is Dropout, Linear, Dropout, Linear...
  options.activation = "None";
  auto plain = RqVae::Create(32, options);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->Parameters()[2].name, "encoder.mlp_layers.3.weight");
  EXPECT_EQ(plain->Parameters()[22].name, "decoder.mlp_layers.9.bias");
  // Writing through the pointers is what loading a checkpoint does: codebook 0 all at one point
  // sends every item to code 0 there.
  std::fill_n(params[10].data, 256 * 32, 0.0f);
  params[10].data[5 * 32] = -1e-3f;  // code 5 slightly off: not chosen by everyone
  std::vector<float> x(4 * 32, 0.5f);
  std::vector<int32_t> codes(4 * 3);
  model->Encode(x.data(), 4, codes.data());
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(codes[i * 3] == 0 || codes[i * 3] == 5);
}

// The count and the memory estimate the server checks against its limit follow the model.
TEST(RqVaeTest, ParameterCountAndTrainingBytesFollowTheModel) {
  for (bool bn : {false, true}) {
    RqVaeOptions options;
    options.layers = {96, 48};
    options.e_dim = 12;
    options.num_emb_list = {64, 32};
    options.sk_epsilons = {};
    options.bn = bn;
    auto model = RqVae::Create(40, options);
    ASSERT_TRUE(model.ok()) << model.status();
    int64_t trainable = 0;
    for (const RqVaeParameter& param : model->Parameters()) {
      if (param.buffer) continue;
      int64_t size = 1;
      for (int64_t extent : param.shape) size *= extent;
      trainable += size;
    }
    EXPECT_EQ(RqVaeParameterCount(options, 40), trainable) << "bn " << bn;
    // At least the parameters five times over (values, gradients, moments, kept model) and the
    // rows' codes; growing with the rows and the batch.
    const int64_t bytes = RqVaeTrainingBytes(options, 40, 10000);
    EXPECT_GE(bytes, 5 * trainable * 4 + 10000 * 2 * 4);
    EXPECT_GT(RqVaeTrainingBytes(options, 40, 20000), bytes);
    options.batch_size = 4096;
    EXPECT_GT(RqVaeTrainingBytes(options, 40, 10000), bytes);
  }
}

TEST(RqVaeTest, InvalidOptionsNameTheField) {
  struct Case {
    std::function<void(RqVaeOptions&)> change;
    const char* field;
  };
  const std::vector<Case> cases = {
      {[](RqVaeOptions& o) { o.layers = {}; }, "layers"},
      {[](RqVaeOptions& o) {
         o.layers = {64, 0};
       },
       "layers[1] = 0"},
      {[](RqVaeOptions& o) { o.e_dim = 33; }, "e_dim 33"},
      {[](RqVaeOptions& o) { o.e_dim = 0; }, "e_dim 0"},
      {[](RqVaeOptions& o) { o.num_emb_list = {}; }, "num_emb_list"},
      {[](RqVaeOptions& o) {
         o.num_emb_list = {256, -1, 256};
       },
       "num_emb_list[1] = -1"},
      {[](RqVaeOptions& o) {
         o.sk_epsilons = {0, 0};
       },
       "sk_epsilons has 2"},
      {[](RqVaeOptions& o) {
         o.sk_epsilons = {0, -0.1, 0};
       },
       "sk_epsilons[1] = -0.1"},
      {[](RqVaeOptions& o) { o.sk_iters = 0; }, "sk_iters 0"},
      {[](RqVaeOptions& o) { o.beta = -1; }, "beta -1"},
      {[](RqVaeOptions& o) { o.quant_loss_weight = NAN; }, "quant_loss_weight nan"},
      {[](RqVaeOptions& o) { o.dropout_prob = 1; }, "dropout_prob 1"},
      {[](RqVaeOptions& o) { o.activation = "swish"; }, "activation \"swish\""},
      {[](RqVaeOptions& o) { o.lr = 0; }, "lr 0"},
      {[](RqVaeOptions& o) { o.lr = -1e-3; }, "lr -0.001"},
      {[](RqVaeOptions& o) { o.weight_decay = -1; }, "weight_decay -1"},
      {[](RqVaeOptions& o) { o.warmup_epochs = -1; }, "warmup_epochs -1"},
      {[](RqVaeOptions& o) { o.lr_scheduler_type = "cosine"; }, "lr_scheduler_type"},
      {[](RqVaeOptions& o) { o.epochs = 0; }, "epochs 0"},
      {[](RqVaeOptions& o) { o.batch_size = 0; }, "batch_size 0"},
      {[](RqVaeOptions& o) { o.kmeans_iters = 0; }, "kmeans_iters 0"},
      {[](RqVaeOptions& o) { o.eval_step = 0; }, "eval_step 0"},
      {[](RqVaeOptions& o) { o.num_threads = -2; }, "num_threads -2"},
  };
  const std::vector<float> x(64 * 32, 0.1f);
  for (const Case& c : cases) {
    RqVaeOptions o;
    c.change(o);
    const absl::Status s = TrainRqVae(x.data(), 64, 32, o).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field << ": " << s;
    EXPECT_TRUE(absl::StrContains(s.message(), c.field)) << c.field << ": " << s;
  }
  // k-means on a first batch smaller than a codebook.
  RqVaeOptions small_batch;
  small_batch.batch_size = 100;
  const absl::Status k = TrainRqVae(x.data(), 64, 32, small_batch).status();
  EXPECT_EQ(k.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(k.message(), "num_emb_list[0] = 256")) << k;
}

// A non-finite loss (lr 1e30) and a finite one that explodes (lr 1, which the server still
// accepts) both end training as divergence, naming the epoch and the loss.
TEST(RqVaeTrainTest, DivergenceNamesEpochAndLoss) {
  const Matrix data = Beauty(600);
  for (const auto& [lr, epochs, words] : std::vector<std::tuple<double, int, std::string>>{
           {1e30, 12, "epoch 0"}, {1.0, 40, "times the lowest epoch loss"}}) {
    RqVaeOptions options = SmallOptions();
    options.lr = lr;
    options.warmup_epochs = 0;
    options.epochs = epochs;
    const absl::Status s = TrainRqVae(data.values.data(), data.rows, data.dim, options).status();
    EXPECT_EQ(s.code(), absl::StatusCode::kAborted) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "training diverged at epoch")) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), words)) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), "loss")) << s;
  }
}

}  // namespace
}  // namespace quantd
