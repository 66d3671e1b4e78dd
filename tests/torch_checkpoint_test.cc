// The PyTorch checkpoint reader (issue #13 part 5): checkpoints written by real PyTorch from
// the seed pipeline's model (tests/data/torch/make_rqvae_fixture.py) load, and quantd's codes
// equal PyTorch's exactly, its latents to float tolerance; hostile and broken files (pickles
// naming os.system or builtins.eval, unknown opcodes, truncations, missing or short storages,
// wrong shapes, non-finite weights, deep nesting, huge counts) are refused with a message
// naming the cause; a seeded fuzz over the fixtures and their pickle never crashes.
#include "io/torch_checkpoint.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/rqvae.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "io/npz.h"
#include "io/zip.h"

namespace quantd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Members = std::vector<std::pair<std::string, std::string>>;

std::string FixturePath(const std::string& name) {
  return absl::StrCat(QUANTD_TEST_FIXTURE_DIR, "/torch/", name);
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The members of a ZIP archive, in order.
Members Unzip(const std::string& bytes) {
  Members out;
  auto zip = ZipArchive::Open(bytes, "test");
  EXPECT_TRUE(zip.ok()) << zip.status();
  if (!zip.ok()) return out;
  for (const ZipEntry& e : zip->entries()) {
    std::string scratch;
    auto data = zip->Read(e, &scratch);
    EXPECT_TRUE(data.ok()) << data.status();
    out.emplace_back(e.name, std::string(data.ok() ? *data : ""));
  }
  return out;
}

std::string Zip(const Members& members) {
  auto zip = StoredZip(members);
  EXPECT_TRUE(zip.ok()) << zip.status();
  return zip.ok() ? *zip : "";
}

std::string* Member(Members& members, absl::string_view name) {
  for (auto& [n, bytes] : members) {
    if (n == name) return &bytes;
  }
  ADD_FAILURE() << "no member " << name;
  static std::string none;
  return &none;
}

// What make_rqvae_fixture.py saved beside a checkpoint.
struct Expected {
  int64_t n = 0;
  std::vector<float> inputs;   // n x 32
  std::vector<int64_t> codes;  // n x 3
  std::vector<float> latents;  // n x 16
};

Expected ReadExpected(const std::string& name) {
  Expected e;
  auto arrays = ReadNpz(FixturePath(name));
  EXPECT_TRUE(arrays.ok()) << arrays.status();
  if (!arrays.ok()) return e;
  for (const NpyArray& a : *arrays) {
    if (a.name == "inputs") {
      e.n = a.shape[0];
      e.inputs = a.ToFloat();
    } else if (a.name == "codes") {
      e.codes = *a.ToInt64();
    } else if (a.name == "latents") {
      e.latents = a.ToFloat();
    }
  }
  return e;
}

absl::StatusOr<TorchCheckpoint> ParseFile(const std::string& name) {
  return ParseTorchCheckpoint(ReadBytes(FixturePath(name)));
}

// quantd's codes equal PyTorch's; latents agree to 1e-4 of each row's largest magnitude.
void ExpectSameAsPyTorch(const RqVae& model, const Expected& e) {
  ASSERT_GT(e.n, 0);
  const RqVaeEncoder encoder(model);
  ASSERT_EQ(encoder.levels(), 3);
  ASSERT_EQ(encoder.e_dim(), 16);
  std::vector<int32_t> codes(e.n * 3);
  std::vector<float> latents(e.n * 16);
  encoder.Encode(e.inputs.data(), e.n, codes.data(), latents.data(), 1);
  int64_t mismatched = 0;
  for (int64_t k = 0; k < e.n * 3; ++k) mismatched += codes[k] != e.codes[k];
  EXPECT_EQ(mismatched, 0) << "of " << e.n * 3 << " codes";
  double worst = 0;
  for (int64_t i = 0; i < e.n; ++i) {
    float scale = 0;
    for (int j = 0; j < 16; ++j) scale = std::max(scale, std::abs(e.latents[i * 16 + j]));
    for (int j = 0; j < 16; ++j) {
      worst = std::max<double>(
          worst, std::abs(latents[i * 16 + j] - e.latents[i * 16 + j]) / std::max(scale, 1e-6f));
    }
  }
  EXPECT_LT(worst, 1e-4);
  ::testing::Test::RecordProperty("worst_latent_error", absl::StrCat(worst));
  // The model's own (unpacked) path agrees with the serving encoder.
  std::vector<int32_t> again(e.n * 3);
  model.Encode(e.inputs.data(), e.n, again.data(), nullptr, 1);
  EXPECT_EQ(again, codes);
}

std::vector<std::string> Names(const TorchCheckpoint& c) {
  std::vector<std::string> names;
  for (const auto& [name, tensor] : c.state_dict) names.push_back(name);
  return names;
}

TEST(TorchCheckpointTest, BatchNormCheckpointMatchesPyTorch) {
  auto checkpoint = ParseFile("rqvae_bn.pth");
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->archive_name, "rqvae_bn");  // torch 1.x: the file's stem
  EXPECT_EQ(checkpoint->version, 3);
  EXPECT_TRUE(checkpoint->has_args);
  EXPECT_TRUE(checkpoint->has_optimizer);
  EXPECT_EQ(checkpoint->epoch, 74);
  ASSERT_TRUE(checkpoint->best_loss.has_value());
  EXPECT_GT(*checkpoint->best_loss, 0);
  EXPECT_EQ(checkpoint->best_collision_rate, 0.375);
  // Dropout, Linear, BatchNorm1d, ReLU per layer: Linears 1, 5, 9 and batch norms 2, 6.
  const std::vector<std::string> names = Names(*checkpoint);
  ASSERT_EQ(names.size(), 35u);
  EXPECT_EQ(names[0], "encoder.mlp_layers.1.weight");
  EXPECT_EQ(names[6], "encoder.mlp_layers.2.num_batches_tracked");
  EXPECT_EQ(names[16], "rq.vq_layers.0.embedding.weight");
  EXPECT_EQ(names[34], "decoder.mlp_layers.9.bias");
  const TorchTensor* tracked = checkpoint->FindTensor("encoder.mlp_layers.6.num_batches_tracked");
  ASSERT_NE(tracked, nullptr);
  EXPECT_EQ(tracked->dtype, TorchDtype::kInt64);
  EXPECT_TRUE(tracked->shape.empty());
  // The script's 300 training steps and its k-means pass, run in training mode.
  EXPECT_THAT(tracked->ints, ElementsAre(301));
  const TorchTensor* w = checkpoint->FindTensor("encoder.mlp_layers.5.weight");
  ASSERT_NE(w, nullptr);
  EXPECT_THAT(w->shape, ElementsAre(32, 64));
  EXPECT_EQ(w->floats.size(), 32u * 64u);

  auto model = RqVaeFromCheckpoint(*checkpoint, 32);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_TRUE(model->options().bn);
  EXPECT_THAT(model->options().layers, ElementsAre(64, 32));
  EXPECT_EQ(model->options().e_dim, 16);
  EXPECT_THAT(model->options().num_emb_list, ElementsAre(16, 16, 16));
  EXPECT_THAT(model->options().sk_epsilons, ElementsAre(0.0, 0.0, 0.0));
  EXPECT_EQ(model->options().sk_iters, 50);
  EXPECT_EQ(model->options().activation, "relu");
  ExpectSameAsPyTorch(*model, ReadExpected("rqvae_bn.npz"));
}

TEST(TorchCheckpointTest, DropoutCheckpointMatchesPyTorch) {
  auto checkpoint = ParseFile("rqvae_dropout.pth");
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_THAT(Names(*checkpoint),
              ElementsAre("encoder.mlp_layers.1.weight", "encoder.mlp_layers.1.bias",
                          "encoder.mlp_layers.4.weight", "encoder.mlp_layers.4.bias",
                          "encoder.mlp_layers.7.weight", "encoder.mlp_layers.7.bias",
                          "rq.vq_layers.0.embedding.weight", "rq.vq_layers.1.embedding.weight",
                          "rq.vq_layers.2.embedding.weight", "decoder.mlp_layers.1.weight",
                          "decoder.mlp_layers.1.bias", "decoder.mlp_layers.4.weight",
                          "decoder.mlp_layers.4.bias", "decoder.mlp_layers.7.weight",
                          "decoder.mlp_layers.7.bias"));
  auto model = RqVaeFromCheckpoint(*checkpoint, 32);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_FALSE(model->options().bn);
  EXPECT_EQ(model->options().dropout_prob, 0.1);
  ExpectSameAsPyTorch(*model, ReadExpected("rqvae_dropout.npz"));
}

TEST(TorchCheckpointTest, ArgsAreTheNamespaceAttributes) {
  auto checkpoint = ParseFile("rqvae_bn.pth");
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const auto arg = [&](const char* name) {
    const TorchArg* a = checkpoint->FindArg(name);
    return a == nullptr ? std::string("missing") : a->DebugString();
  };
  EXPECT_EQ(checkpoint->args.front().first, "lr");  // the parser's order
  EXPECT_EQ(arg("lr"), "0.003");
  EXPECT_EQ(arg("bn"), "True");  // `--bn True`
  EXPECT_EQ(arg("layers"), "[64, 32]");
  EXPECT_EQ(arg("num_emb_list"), "[16, 16, 16]");
  EXPECT_EQ(arg("sk_epsilons"), "[0, 0, 0]");
  EXPECT_EQ(arg("loss_type"), "'mse'");
  EXPECT_EQ(arg("wandb_name"), "None");
  EXPECT_EQ(arg("device"), "'cpu'");
  EXPECT_EQ(arg("activation"), "missing");
  EXPECT_EQ(checkpoint->FindArg("e_dim")->kind, TorchArg::Kind::kInt);
  EXPECT_EQ(checkpoint->FindArg("beta")->double_value, 0.25);

  // The seed zips num_emb_list with sk_epsilons: a shorter list means fewer levels.
  TorchCheckpoint two = *checkpoint;
  for (auto& [name, value] : two.args) {
    if (name == "sk_epsilons") value.items.pop_back();
  }
  auto options = RqVaeOptionsFromCheckpoint(two);
  ASSERT_TRUE(options.ok()) << options.status();
  EXPECT_THAT(options->num_emb_list, ElementsAre(16, 16));
  auto model = RqVaeFromCheckpoint(two, 32);
  ASSERT_FALSE(model.ok());
  EXPECT_THAT(model.status().message(),
              HasSubstr("state_dict has rq.vq_layers.2.embedding.weight, which the model"));

  TorchCheckpoint bad = *checkpoint;
  for (auto& [name, value] : bad.args) {
    if (name == "e_dim") value = TorchArg{TorchArg::Kind::kString, false, 0, 0, "16", {}};
  }
  EXPECT_THAT(RqVaeFromCheckpoint(bad, 32).status().message(),
              HasSubstr("args.e_dim is '16', not an int"));
  TorchCheckpoint no_layers = *checkpoint;
  std::erase_if(no_layers.args, [](const auto& a) { return a.first == "layers"; });
  EXPECT_THAT(RqVaeFromCheckpoint(no_layers, 32).status().message(),
              HasSubstr("args lacks layers"));
}

TEST(TorchCheckpointTest, BareStateDictNeedsOptions) {
  auto bare = ParseFile("rqvae_bn_state_dict.pth");  // torch.save's default protocol 2
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_FALSE(bare->has_args);
  EXPECT_FALSE(bare->has_optimizer);
  EXPECT_FALSE(bare->epoch.has_value());
  EXPECT_EQ(bare->state_dict.size(), 35u);
  auto without = RqVaeFromCheckpoint(*bare, 32);
  ASSERT_FALSE(without.ok());
  EXPECT_THAT(without.status().message(), HasSubstr("no args (a bare state dict)"));

  auto full = ParseFile("rqvae_bn.pth");
  ASSERT_TRUE(full.ok()) << full.status();
  auto options = RqVaeOptionsFromCheckpoint(*full);
  ASSERT_TRUE(options.ok()) << options.status();
  auto model = RqVaeFromCheckpoint(*bare, 32, *options);
  ASSERT_TRUE(model.ok()) << model.status();
  ExpectSameAsPyTorch(*model, ReadExpected("rqvae_bn.npz"));

  options->bn = false;
  auto disagree = RqVaeFromCheckpoint(*bare, 32, *options);
  ASSERT_FALSE(disagree.ok());
  EXPECT_THAT(disagree.status().message(),
              HasSubstr("options.bn is False but the state_dict has batch-norm tensors"));
}

// torch 2.x names the folder "archive" and adds byteorder and a few dot files.
TEST(TorchCheckpointTest, Torch2ArchiveLayout) {
  Members members = Unzip(ReadBytes(FixturePath("rqvae_dropout.pth")));
  for (auto& [name, bytes] : members) name = "archive" + name.substr(name.find('/'));
  members.insert(members.begin() + 1, {"archive/byteorder", "little"});
  members.emplace_back("archive/.data/serialization_id", "1234567890");
  members.emplace_back("archive/.format_version", "1");
  auto checkpoint = ParseTorchCheckpoint(Zip(members));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  EXPECT_EQ(checkpoint->archive_name, "archive");
  auto model = RqVaeFromCheckpoint(*checkpoint, 32);
  ASSERT_TRUE(model.ok()) << model.status();
  ExpectSameAsPyTorch(*model, ReadExpected("rqvae_dropout.npz"));

  *Member(members, "archive/byteorder") = "middle";
  EXPECT_THAT(ParseTorchCheckpoint(Zip(members)).status().message(),
              HasSubstr("archive/byteorder is 'middle'"));
}

// A small pickle writer for hand-made data.pkl files (protocol 2 opcodes).
struct Pickle {
  std::string b = "\x80\x02";
  Pickle& Op(absl::string_view ops) {
    absl::StrAppend(&b, ops);
    return *this;
  }
  Pickle& Str(absl::string_view s) {
    b.push_back('X');
    const auto n = static_cast<uint32_t>(s.size());
    for (int k = 0; k < 4; ++k) b.push_back(static_cast<char>((n >> (8 * k)) & 0xff));
    absl::StrAppend(&b, s);
    return *this;
  }
  Pickle& Int(int32_t v) {
    b.push_back('J');
    for (int k = 0; k < 4; ++k)
      b.push_back(static_cast<char>((static_cast<uint32_t>(v) >> (8 * k)) & 0xff));
    return *this;
  }
  Pickle& Global(absl::string_view module, absl::string_view name) {
    absl::StrAppend(&b, "c", module, "\n", name, "\n");
    return *this;
  }
  Pickle& Ints(const std::vector<int32_t>& values) {
    Op("(");
    for (int32_t v : values) Int(v);
    return Op("t");
  }
  // Pushes a tensor over storage `key` (FloatStorage of numel elements).
  Pickle& Tensor(absl::string_view key, int32_t numel, int32_t offset,
                 const std::vector<int32_t>& size, const std::vector<int32_t>& stride,
                 absl::string_view storage_type = "FloatStorage") {
    Global("torch._utils", "_rebuild_tensor_v2").Op("((").Str("storage");
    Global("torch", storage_type).Str(key).Str("cpu").Int(numel).Op("tQ");
    Int(offset).Ints(size).Ints(stride).Op("\x89");
    return Global("collections", "OrderedDict").Op(")Rt").Op("R");
  }
  std::string Done() { return b + "."; }
};

std::string Floats(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

// An archive of one data.pkl and storage "0".
std::string Archive(const std::string& pickle, const std::string& storage = "") {
  return Zip(
      {{"archive/data.pkl", pickle}, {"archive/data/0", storage}, {"archive/version", "3\n"}});
}

absl::Status ParsePickle(const std::string& pickle, const std::string& storage = "") {
  return ParseTorchCheckpoint(Archive(pickle, storage)).status();
}

void ExpectRefused(const absl::Status& status, const std::string& cause) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StartsWith(status.message(), "torch checkpoint: "));
  EXPECT_THAT(std::string(status.message()), HasSubstr(cause));
}
template <typename T>
void ExpectRefused(const absl::StatusOr<T>& result, const std::string& cause) {
  ExpectRefused(result.status(), cause);
}

TEST(TorchCheckpointTest, StridedViewsAreMaterialised) {
  // A transposed view (stride (1, 2)) starting at element 1 of a 7-element storage.
  const std::string pickle = Pickle()
                                 .Global("collections", "OrderedDict")
                                 .Op(")R(")
                                 .Str("t")
                                 .Tensor("0", 7, 1, {2, 3}, {1, 2})
                                 .Str("s")
                                 .Tensor("0", 7, 6, {}, {})
                                 .Op("u")
                                 .Done();
  auto checkpoint = ParseTorchCheckpoint(Archive(pickle, Floats({0, 1, 2, 3, 4, 5, 6})));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const TorchTensor* t = checkpoint->FindTensor("t");
  ASSERT_NE(t, nullptr);
  EXPECT_THAT(t->shape, ElementsAre(2, 3));
  EXPECT_THAT(t->floats, ElementsAre(1, 3, 5, 2, 4, 6));
  EXPECT_THAT(checkpoint->FindTensor("s")->floats, ElementsAre(6));
}

// Other dtypes keep their shape and dtype (RqVaeFromCheckpoint refuses them as weights).
TEST(TorchCheckpointTest, OtherDtypesAreKeptWithoutValues) {
  const std::string pickle =
      Pickle().Op("}(").Str("d").Tensor("0", 2, 0, {2}, {1}, "DoubleStorage").Op("u").Done();
  auto checkpoint = ParseTorchCheckpoint(Archive(pickle, std::string(16, '\0')));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  const TorchTensor* d = checkpoint->FindTensor("d");
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->dtype, TorchDtype::kFloat64);
  EXPECT_EQ(TorchDtypeName(d->dtype), "torch.float64");
  EXPECT_THAT(d->shape, ElementsAre(2));
  EXPECT_TRUE(d->floats.empty());
  ExpectRefused(ParsePickle(pickle, std::string(12, '\0')),
                "storage '0' (member archive/data/0) holds 12 bytes, its record declares 2 "
                "torch.float64 elements");
}

// A hand-written Namespace (NEWOBJ, BUILD) holding a torch.device and protocol 2's bytes.
TEST(TorchCheckpointTest, NamespaceDeviceAndBytes) {
  const std::string pickle = Pickle()
                                 .Op("}(")
                                 .Str("state_dict")
                                 .Op("}")
                                 .Str("args")
                                 .Global("argparse", "Namespace")
                                 .Op(")\x81}(")
                                 .Str("device")
                                 .Global("torch", "device")
                                 .Str("cuda")
                                 .Int(1)
                                 .Op("\x86R")
                                 .Str("blob")
                                 .Global("_codecs", "encode")
                                 .Str("ab\xc3\xbf")
                                 .Str("latin1")
                                 .Op("\x86R")
                                 .Str("layers")
                                 .Op("(")
                                 .Int(64)
                                 .Op("(")
                                 .Int(1)
                                 .Op("tt")
                                 .Op("ub")
                                 .Str("epoch")
                                 .Int(3)
                                 .Op("u")
                                 .Done();
  auto checkpoint = ParseTorchCheckpoint(Archive(pickle));
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  ASSERT_TRUE(checkpoint->has_args);
  EXPECT_EQ(checkpoint->epoch, 3);
  EXPECT_EQ(checkpoint->FindArg("device")->DebugString(), "'cuda:1'");
  EXPECT_EQ(checkpoint->FindArg("blob")->DebugString(), "<bytes (3)>");
  EXPECT_EQ(checkpoint->FindArg("layers")->DebugString(), "(64, <a tuple of 1>)");
  // Required args are looked for first, then their types.
  ExpectRefused(RqVaeFromCheckpoint(*checkpoint, 32), "args lacks e_dim");
  TorchCheckpoint typed = *checkpoint;
  typed.args.emplace_back("e_dim", TorchArg{TorchArg::Kind::kInt, false, 16, 0, "", {}});
  typed.args.emplace_back("num_emb_list", typed.args.back().second);
  ExpectRefused(RqVaeFromCheckpoint(typed, 32),
                "args.layers is (64, <a tuple of 1>), not a list of ints");
}

TEST(TorchCheckpointTest, RefusesGlobalsOutsideTheAllowList) {
  // os.system('ls') as pickle.dumps writes it at protocol 2.
  ExpectRefused(ParsePickle(Pickle().Global("os", "system").Str("ls").Op("\x85R").Done()),
                "pickle global os.system is not allowed");
  // builtins.eval through STACK_GLOBAL (protocol 4).
  ExpectRefused(ParsePickle(std::string("\x80\x04\x8c\x08") + "builtins" + "\x8c\x04" + "eval" +
                            "\x93\x8c\x01" + "1" + "\x85R."),
                "pickle global builtins.eval is not allowed");
  // __reduce__ of an unknown class, through REDUCE, NEWOBJ and INST.
  ExpectRefused(ParsePickle(Pickle().Global("__main__", "Evil").Op(")R").Done()),
                "pickle global __main__.Evil is not allowed");
  ExpectRefused(ParsePickle(Pickle().Global("__main__", "Evil").Op(")\x81").Done()),
                "pickle global __main__.Evil is not allowed");
  ExpectRefused(ParsePickle("(ishutil\nrmtree\n."), "pickle global shutil.rmtree is not allowed");
  ExpectRefused(ParsePickle(Pickle().Global("torch", "load").Done()),
                "pickle global torch.load is not allowed");
  // Allowed names used otherwise than a state dict does.
  ExpectRefused(ParsePickle(Pickle().Global("torch", "FloatStorage").Op(")R").Done()),
                "calling torch.FloatStorage is not allowed");
  ExpectRefused(ParsePickle(Pickle().Str("os").Op(")R").Done()), "calling a str ('os')");
  ExpectRefused(ParsePickle(Pickle().Op("}").Str("x").Op("b").Done()),
                "BUILD (setting the state) of a dict of 0 entries is not allowed");
  ExpectRefused(ParsePickle(Pickle()
                                .Op("(")
                                .Str("storage")
                                .Global("torch", "FloatStorage")
                                .Str("0")
                                .Int(0)
                                .Op("tQ.")
                                .b),
                "is not a ('storage'");  // four fields, not five
  ExpectRefused(ParsePickle(Pickle()
                                .Global("collections", "OrderedDict")
                                .Op(")R(")
                                .Str("t")
                                .Global("torch._utils", "_rebuild_tensor_v2")
                                .Op("((")
                                .Str("storage")
                                .Global("torch", "FloatStorage")
                                .Str("0")
                                .Str("cpu")
                                .Int(1)
                                .Op("tQ")
                                .Int(0)
                                .Ints({1})
                                .Ints({1})
                                .Op("\x89}")
                                .Str("hook")
                                .Global("collections", "OrderedDict")
                                .Op("s")
                                .Op("tRu")
                                .Done(),
                            Floats({1})),
                "backward hooks are a dict of 1 entries");
}

TEST(TorchCheckpointTest, RefusesBadOpcodes) {
  ExpectRefused(ParsePickle("\x80\x02\xff."), "unknown pickle opcode 0xff");
  ExpectRefused(ParsePickle("\x80\x02\x82\x01."), "extension registry");
  ExpectRefused(ParsePickle("\x80\x05\x97."), "out-of-band buffers");
  ExpectRefused(ParsePickle("\x80\x06}."), "pickle protocol 6 is not supported");
  ExpectRefused(ParsePickle("\x80\x02}"), "ends without STOP");
  ExpectRefused(ParsePickle("\x80\x02h\x05."), "memo key 5 was never set");
  ExpectRefused(ParsePickle("\x80\x02"
                            "a."),
                "stack underflow");
  ExpectRefused(ParsePickle("\x80\x02)(a."), "stack underflow");  // nothing above the MARK
  ExpectRefused(ParsePickle("\x80\x02)Na."), "cannot add items to a tuple of 0");
  ExpectRefused(ParsePickle("\x80\x02}N."), "STOP with 2 values");
  ExpectRefused(ParsePickle("\x80\x02X\xff\xff\xff\x7f"
                            "abc."),
                "needs 2147483647 more bytes");
  ExpectRefused(ParsePickle("\x80\x02\x8c\x02\xff\xfe."), "not valid UTF-8");
  ExpectRefused(ParsePickle("\x80\x02\x8b\xff\xff\xff\xff."), "LONG4 with a negative length");
  ExpectRefused(ParsePickle("\x80\x02K\x01."), "holds an int (1), neither a checkpoint dict");
  // Text opcodes of protocol 0 build the same values.
  auto text = ParseTorchCheckpoint(Archive("(dp0\nVstate_dict\np1\n(dp2\nsVepoch\nI7\ns."));
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->epoch, 7);
  EXPECT_TRUE(text->state_dict.empty());
}

TEST(TorchCheckpointTest, RefusesDeepNestingAndHugeCounts) {
  ExpectRefused(ParsePickle("\x80\x02" + std::string(5000, '(') + "."),
                "more than 1000 nested MARKs");
  ExpectRefused(ParsePickle("\x80\x02]" + std::string((1 << 20) + 10, '2') + "."),
                "stack deeper than 1048576");
  // A list nested a million deep is just values in the arena: parsed without recursion.
  std::string nested = "\x80\x02";
  for (int k = 0; k < 100000; ++k) nested += "]";
  for (int k = 0; k < 99999; ++k) nested += "a";
  ExpectRefused(ParsePickle(nested + "."), "holds a list of 1, neither");
  // Sizes beyond the storage, overflowing, or a storage claiming more than its member holds.
  const auto tensor = [](int32_t numel, int32_t offset, std::vector<int32_t> size,
                         std::vector<int32_t> stride) {
    return Pickle()
        .Global("collections", "OrderedDict")
        .Op(")R(")
        .Str("w")
        .Tensor("0", numel, offset, size, stride)
        .Op("u")
        .Done();
  };
  const std::string four = Floats({1, 2, 3, 4});
  ExpectRefused(ParsePickle(tensor(4, 2, {2, 2}, {2, 1}), four),
                "reaches element 5: the storage is too short");
  ExpectRefused(ParsePickle(tensor(4, 0, {1 << 30, 1 << 30, 1 << 30}, {1, 1, 1}), four),
                "sizes overflow");
  ExpectRefused(ParsePickle(tensor(4, 0, {3, 2}, {0, 1}), four), "expanded views");
  ExpectRefused(ParsePickle(tensor(1 << 30, 0, {4}, {1}), four),
                "storage '0' (member archive/data/0) holds 16 bytes, its record declares "
                "1073741824 torch.float32 elements");
  ExpectRefused(ParsePickle(tensor(4, -1, {4}, {1}), four), "storage offset is an int (-1)");
}

TEST(TorchCheckpointTest, RefusesBrokenArchives) {
  const std::string good = ReadBytes(FixturePath("rqvae_bn.pth"));
  ExpectRefused(ParseTorchCheckpoint("hello, world: not a checkpoint"), "not a ZIP archive");
  ExpectRefused(ParseTorchCheckpoint(""), "not a ZIP archive");
  // The legacy format starts with the pickled magic number.
  ExpectRefused(ParseTorchCheckpoint(std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8"
                                                 "\x50\x19.\x80\x02}q\x00.",
                                                 21)),
                "legacy torch.save format");
  ExpectRefused(ParseTorchCheckpoint(std::string("\x80\x02}q\x00.", 6)), "a bare pickle");
  ExpectRefused(ParseTorchCheckpoint(Zip({{"model/constants.pkl", "x"}, {"model/data.pkl", "x"}})),
                "TorchScript archive");
  ExpectRefused(ParseTorchCheckpoint(Zip({{"weights.bin", "x"}})), "no <folder>/data.pkl member");
  // A member claiming to inflate to 100 MB (its central directory entry made "deflated").
  std::string bomb = Zip({{"archive/data.pkl", std::string(1000, 'x')}});
  const size_t entry = bomb.find("PK\x01\x02");
  ASSERT_NE(entry, std::string::npos);
  bomb[entry + 10] = 8;
  const uint32_t size = 100'000'000;
  std::memcpy(bomb.data() + entry + 24, &size, 4);
  ExpectRefused(ParseTorchCheckpoint(bomb), "the members would inflate to more than");
  // Truncated anywhere.
  for (size_t n = 0; n < good.size(); n += n < 200 ? 1 : 211) {
    const auto status = ParseTorchCheckpoint(absl::string_view(good).substr(0, n)).status();
    EXPECT_FALSE(status.ok()) << n;
    EXPECT_TRUE(absl::StartsWith(status.message(), "torch checkpoint: ")) << n;
  }
  // The pickle truncated at every offset, re-zipped with valid CRCs.
  const Members members = Unzip(good);
  const std::string pickle = members[0].second;
  ASSERT_EQ(members[0].first, "rqvae_bn/data.pkl");
  for (size_t n = 0; n < pickle.size(); n += 7) {
    Members cut = members;
    cut[0].second = pickle.substr(0, n);
    const auto status = ParseTorchCheckpoint(Zip(cut)).status();
    EXPECT_FALSE(status.ok()) << n;
    EXPECT_THAT(status.message(), HasSubstr("rqvae_bn/data.pkl: ")) << n;
  }
  // A storage missing or short.
  Members missing = members;
  std::erase_if(missing, [](const auto& m) { return m.first == "rqvae_bn/data/0"; });
  ExpectRefused(ParseTorchCheckpoint(Zip(missing)).status(),
                "storage '0' (member rqvae_bn/data/0) is not in the archive");
  Members short_storage = members;
  Member(short_storage, "rqvae_bn/data/0")->resize(100);
  ExpectRefused(ParseTorchCheckpoint(Zip(short_storage)).status(),
                "storage '0' (member rqvae_bn/data/0) holds 100 bytes, its record declares 2048 "
                "torch.float32 elements");
  // A flipped byte in a storage: the CRC-32 catches it.
  std::string flipped = good;
  flipped[good.find("rqvae_bn/data/0") + 200] ^= 0x40;
  auto crc = ParseTorchCheckpoint(flipped);
  ExpectRefused(crc, "rqvae_bn/data.pkl: storage '0': member 'rqvae_bn/data/0': CRC-32");
  EXPECT_EQ(crc.status().message().find("torch checkpoint", 5), absl::string_view::npos)
      << crc.status();
}

TEST(TorchCheckpointTest, RefusesWeightsTheModelCannotUse) {
  const std::string good = ReadBytes(FixturePath("rqvae_dropout.pth"));
  auto checkpoint = ParseTorchCheckpoint(good);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();

  TorchCheckpoint missing = *checkpoint;
  std::erase_if(missing.state_dict,
                [](const auto& t) { return t.first == "encoder.mlp_layers.4.weight"; });
  ExpectRefused(RqVaeFromCheckpoint(missing, 32).status(),
                "state_dict lacks encoder.mlp_layers.4.weight");

  TorchCheckpoint narrower = *checkpoint;
  for (auto& [name, value] : narrower.args) {
    if (name == "layers") value.items[1].int_value = 30;
  }
  ExpectRefused(RqVaeFromCheckpoint(narrower, 32).status(),
                "encoder.mlp_layers.4.weight has shape [32, 64], the model needs [30, 64]");

  ExpectRefused(RqVaeFromCheckpoint(*checkpoint, 30).status(),
                "input_dim 30 does not match the checkpoint: encoder.mlp_layers.1.weight has "
                "shape [64, 32], a model of 32-d inputs");

  TorchCheckpoint extra = *checkpoint;
  extra.state_dict.emplace_back("rq.vq_layers.3.embedding.weight", TorchTensor{});
  ExpectRefused(RqVaeFromCheckpoint(extra, 32).status(),
                "state_dict has rq.vq_layers.3.embedding.weight, which the model");

  TorchCheckpoint bn = *checkpoint;
  for (auto& [name, value] : bn.args) {
    if (name == "bn") value.bool_value = true;
  }
  ExpectRefused(RqVaeFromCheckpoint(bn, 32).status(),
                "args.bn is True but the state_dict has no batch-norm tensors");

  TorchCheckpoint doubles = *checkpoint;
  doubles.state_dict[2].second.dtype = TorchDtype::kFloat64;
  ExpectRefused(RqVaeFromCheckpoint(doubles, 32).status(),
                "encoder.mlp_layers.4.weight has unsupported dtype torch.float64");

  TorchCheckpoint huge = *checkpoint;
  for (auto& [name, value] : huge.args) {
    if (name == "layers") value.items[0].int_value = 1 << 30;
  }
  ExpectRefused(RqVaeFromCheckpoint(huge, 32).status(), "args describe a model of");

  // A NaN written into the file's first weight (storage '0'), re-zipped with a valid CRC.
  Members members = Unzip(good);
  std::string* storage = Member(members, "rqvae_dropout/data/0");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::memcpy(storage->data() + 4 * 5, &nan, sizeof(nan));
  auto poisoned = ParseTorchCheckpoint(Zip(members));
  ASSERT_TRUE(poisoned.ok()) << poisoned.status();
  ExpectRefused(RqVaeFromCheckpoint(*poisoned, 32).status(),
                "encoder.mlp_layers.1.weight element 5 is nan: weights must be finite");
}

// Seeded random damage: flips, truncations and insertions over the whole files, and over
// data.pkl alone (re-zipped, so that the damage reaches the interpreter past the CRC). Only
// "returns without crashing" is asserted, and that a parsed checkpoint either loads or errors.
TEST(TorchCheckpointTest, FuzzNeverCrashes) {
  std::mt19937_64 rng(20261204);
  int64_t parsed = 0;
  int64_t loaded = 0;
  const auto mutate = [&rng](std::string s) {
    const int kind = static_cast<int>(rng() % 3);
    if (s.empty()) return std::string(1, static_cast<char>(rng()));
    if (kind == 0) {
      const int flips = 1 + static_cast<int>(rng() % 4);
      for (int k = 0; k < flips; ++k) s[rng() % s.size()] ^= static_cast<char>(1 << (rng() % 8));
    } else if (kind == 1) {
      s.resize(rng() % s.size());
    } else {
      std::string insert(1 + rng() % 8, '\0');
      for (char& c : insert) c = static_cast<char>(rng());
      s.insert(rng() % s.size(), insert);
    }
    return s;
  };
  const auto check = [&](const std::string& bytes) {
    auto checkpoint = ParseTorchCheckpoint(bytes);
    if (!checkpoint.ok()) {
      EXPECT_EQ(checkpoint.status().code(), absl::StatusCode::kInvalidArgument)
          << checkpoint.status();
      return;
    }
    ++parsed;
    auto model = checkpoint->has_args ? RqVaeFromCheckpoint(*checkpoint, 32)
                                      : absl::StatusOr<RqVae>(absl::InvalidArgumentError("bare"));
    loaded += model.ok();
  };
  for (const char* name : {"rqvae_bn.pth", "rqvae_dropout.pth", "rqvae_bn_state_dict.pth"}) {
    const std::string good = ReadBytes(FixturePath(name));
    const Members members = Unzip(good);
    for (int round = 0; round < 400; ++round) check(mutate(good));
    for (int round = 0; round < 1000; ++round) {
      Members damaged = members;
      damaged[0].second = mutate(members[0].second);
      check(Zip(damaged));
    }
  }
  // Some damage leaves a loadable file (a flipped bit in a float, a changed epoch).
  EXPECT_GT(parsed, 0);
  RecordProperty("parsed", static_cast<int>(parsed));
  RecordProperty("loaded", static_cast<int>(loaded));
}

}  // namespace
}  // namespace quantd
