// Commands on collections and their items: create, list, describe, drop, upsert, get, delete,
// and inspect (a local vector file).
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/attributes.h"
#include "client/cli.h"
#include "client/client.h"
#include "client/commands.h"
#include "client/output.h"
#include "core/vectors.h"
#include "io/vector_file.h"

namespace quantd::quantctl {
namespace {

// The collection `name` as the server describes it.
absl::StatusOr<v1::Collection> FetchCollection(Cli& cli, const std::string& name) {
  v1::DescribeCollectionRequest request;
  request.set_name(name);
  v1::DescribeCollectionResponse response;
  if (auto s = cli.Call(&v1::Quantd::Stub::DescribeCollection, request, &response); !s.ok()) {
    return s;
  }
  return response.collection();
}

// The request of `quantctl get|delete NAME ID... | --ids FILE`: the collection and the ids.
template <typename Request>
absl::StatusOr<Request> ItemsRequest(Cli& cli) {
  const Args& args = cli.args();
  if (args.positional.size() < 2) return cli.Usage("expected a collection NAME");
  auto ids = cli.IdsArgument();
  if (!ids.ok()) return ids.status();
  Request request;
  request.set_collection(args.positional[1]);
  request.mutable_ids()->Add(ids->begin(), ids->end());
  return request;
}

}  // namespace

absl::Status CreateCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(1, "a collection NAME"); !s.ok()) return s;
  if (!args.Has("dim")) return cli.Usage("--dim is required");
  auto dim = IntOption(args, "dim", 0);
  if (!dim.ok()) return cli.Usage(dim.status().message());
  v1::CreateCollectionRequest request;
  request.set_name(args.positional[1]);
  if (*dim < 0 || *dim > UINT32_MAX) {
    return cli.Usage(absl::StrFormat("--dim %d is outside 1..65536", *dim));
  }
  request.set_dimension(static_cast<uint32_t>(*dim));
  const std::string metric = args.Get("metric", "l2");
  const auto parsed = ParseMetric(metric);
  if (!parsed) return cli.Usage(absl::StrFormat("--metric '%s' is not l2, ip or cosine", metric));
  request.set_metric(*parsed == Metric::kL2             ? v1::METRIC_L2
                     : *parsed == Metric::kInnerProduct ? v1::METRIC_INNER_PRODUCT
                                                        : v1::METRIC_COSINE);
  auto keep = IntOption(args, "keep-versions", 0);
  if (!keep.ok()) return cli.Usage(keep.status().message());
  // 1..16 is the server's to enforce (its error names the field); 0 is its default.
  if (*keep < 0 || *keep > UINT32_MAX) {
    return cli.Usage(absl::StrFormat("--keep-versions %d is outside 1..16", *keep));
  }
  request.set_keep_tokenizer_versions(static_cast<uint32_t>(*keep));
  v1::CreateCollectionResponse response;
  if (auto s = cli.Call(&v1::Quantd::Stub::CreateCollection, request, &response); !s.ok()) return s;
  if (cli.json()) {
    PrintJson(response);
  } else {
    std::printf("created collection '%s' (dimension %d, metric %s, keeps %u tokenizer versions)\n",
                response.collection().name().c_str(), response.collection().dimension(),
                MetricText(response.collection().metric()).c_str(),
                response.collection().keep_tokenizer_versions());
  }
  return absl::OkStatus();
}

absl::Status ListCommand(Cli& cli) {
  if (auto s = cli.NeedPositional(0, "no arguments"); !s.ok()) return s;
  v1::ListCollectionsResponse response;
  if (auto s =
          cli.Call(&v1::Quantd::Stub::ListCollections, v1::ListCollectionsRequest(), &response);
      !s.ok()) {
    return s;
  }
  if (cli.json()) {
    PrintJson(response);
    return absl::OkStatus();
  }
  std::printf("%-32s %9s %-13s %12s\n", "NAME", "DIMENSION", "METRIC", "ITEMS");
  for (const auto& c : response.collections()) {
    std::printf("%-32s %9u %-13s %12llu\n", c.name().c_str(), c.dimension(),
                MetricText(c.metric()).c_str(), static_cast<unsigned long long>(c.item_count()));
  }
  return absl::OkStatus();
}

absl::Status DescribeCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(1, "a collection NAME"); !s.ok()) return s;
  auto collection = FetchCollection(cli, args.positional[1]);
  if (!collection.ok()) return collection.status();
  if (cli.json()) {
    v1::DescribeCollectionResponse response;
    *response.mutable_collection() = *collection;
    PrintJson(response);
  } else {
    std::printf(
        "name:       %s\ndimension:  %u\nmetric:     %s\nitems:      %llu\n"
        "created:    %s\n",
        collection->name().c_str(), collection->dimension(),
        MetricText(collection->metric()).c_str(),
        static_cast<unsigned long long>(collection->item_count()),
        UtcTime(collection->create_time_ms()).c_str());
  }
  return absl::OkStatus();
}

absl::Status DropCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(1, "a collection NAME"); !s.ok()) return s;
  v1::DropCollectionRequest request;
  request.set_name(args.positional[1]);
  v1::DropCollectionResponse response;
  if (auto s = cli.Call(&v1::Quantd::Stub::DropCollection, request, &response); !s.ok()) return s;
  if (cli.json()) {
    PrintJson(response);
  } else {
    std::printf("dropped collection '%s' (%llu items)\n", args.positional[1].c_str(),
                static_cast<unsigned long long>(response.items_deleted()));
  }
  return absl::OkStatus();
}

absl::Status UpsertCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(2, "a collection NAME and a FILE"); !s.ok()) return s;
  if (args.Has("ids") && args.Has("id-offset")) {
    return cli.Usage("--ids and --id-offset exclude each other");
  }
  auto id_offset = IntOption(args, "id-offset", 0);
  auto max_rows = IntOption(args, "max-rows", -1);
  auto batch_rows = IntOption(args, "batch-rows", 0);
  for (const auto* v : {&id_offset, &max_rows, &batch_rows}) {
    if (!v->ok()) return cli.Usage(v->status().message());
  }
  if (*id_offset < 0) return cli.Usage(absl::StrFormat("--id-offset %d is negative", *id_offset));
  if (*batch_rows < 0)
    return cli.Usage(absl::StrFormat("--batch-rows %d is negative", *batch_rows));
  const std::string& name = args.positional[1];
  const std::string& path = args.positional[2];

  auto reader = VectorReader::Open(path);
  if (!reader.ok()) return reader.status();
  auto collection = FetchCollection(cli, name);
  if (!collection.ok()) return collection.status();
  if ((*reader)->dim() != collection->dimension()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s has dimension %d but collection '%s' has dimension %d", path,
                        (*reader)->dim(), name, collection->dimension()));
  }
  std::vector<uint64_t> ids;
  UploadOptions options;
  options.id_offset = static_cast<uint64_t>(*id_offset);
  options.max_rows = *max_rows;
  options.batch_rows = *batch_rows;
  const int64_t total = *max_rows < 0 ? (*reader)->rows() : std::min(*max_rows, (*reader)->rows());
  // A per-row file (--ids, --attributes) must give every row uploaded one entry, and exactly one
  // per file row when the whole file goes; then it is cut to the rows uploaded.
  auto fit_rows = [&](auto& entries, const char* option, const char* what) -> absl::Status {
    const auto count = static_cast<int64_t>(entries.size());
    const bool all_rows = *max_rows < 0 || *max_rows >= (*reader)->rows();
    if (count < total || (all_rows && count != total)) {
      return absl::InvalidArgumentError(
          absl::StrFormat("--%s %s has %d %s for %d rows: give one per row", option,
                          args.Get(option), count, what, total));
    }
    entries.resize(static_cast<size_t>(total));
    return absl::OkStatus();
  };
  if (args.Has("ids")) {
    auto read = ReadIds(args.Get("ids"));
    if (!read.ok()) return read.status();
    ids = std::move(*read);
    if (auto s = fit_rows(ids, "ids", "ids"); !s.ok()) return s;
    options.ids = &ids;
  }
  std::vector<v1::Attributes> attributes;
  if (args.Has("attributes")) {
    auto read = ReadAttributeLines(args.Get("attributes"));
    if (!read.ok()) return read.status();
    attributes = std::move(*read);
    if (auto s = fit_rows(attributes, "attributes", "lines"); !s.ok()) return s;
    options.attributes = &attributes;
  }
  ProgressBar bar(total, (*reader)->dim() * 4, !args.Has("no-progress"));
  options.on_progress = [&bar](int64_t done) { bar.Update(done); };
  auto result = UploadVectors(cli.stub(), name, **reader, options);
  bar.Finish();
  if (!result.ok()) return result.status();
  const double mb = static_cast<double>(result->rows) * (*reader)->dim() * 4 / 1e6;
  if (cli.json()) {
    JsonObject()
        .Set("collection", name)
        .Set("rows", static_cast<double>(result->rows))
        .Set("inserted", static_cast<double>(result->inserted))
        .Set("batches", static_cast<double>(result->batches))
        .Set("item_count", static_cast<double>(result->item_count))
        .Set("seconds", result->seconds)
        .Set("rows_per_second", result->rows / std::max(1e-9, result->seconds))
        .Set("mb_per_second", mb / std::max(1e-9, result->seconds))
        .Print();
  } else {
    std::printf(
        "upserted %lld rows (%lld new) into '%s' in %lld batches, %.2f s: %.0f rows/s, "
        "%.1f MB/s; collection now has %llu items\n",
        static_cast<long long>(result->rows), static_cast<long long>(result->inserted),
        name.c_str(), static_cast<long long>(result->batches), result->seconds,
        result->rows / std::max(1e-9, result->seconds), mb / std::max(1e-9, result->seconds),
        static_cast<unsigned long long>(result->item_count));
  }
  return absl::OkStatus();
}

absl::Status GetCommand(Cli& cli) {
  auto request = ItemsRequest<v1::GetItemsRequest>(cli);
  if (!request.ok()) return request.status();
  v1::GetItemsResponse response;
  if (auto s = cli.Call(&v1::Quantd::Stub::GetItems, *request, &response); !s.ok()) return s;
  const int d = static_cast<int>(response.dimension());
  if (cli.json()) {
    PrintJson(response);
    return absl::OkStatus();
  }
  for (int i = 0; i < response.ids_size(); ++i) {
    std::vector<std::string> shown;
    for (int j = 0; j < std::min(d, 8); ++j) {
      shown.push_back(absl::StrFormat("%.6g", response.vectors(i * d + j)));
    }
    std::string line = absl::StrFormat("%llu\t[%s%s] (%d values)",
                                       static_cast<unsigned long long>(response.ids(i)),
                                       absl::StrJoin(shown, ", "), d > 8 ? ", ..." : "", d);
    if (i < response.attributes_size() && response.attributes(i).values_size() > 0) {
      absl::StrAppend(&line, "\t", FormatAttributes(response.attributes(i)));
    }
    std::printf("%s\n", line.c_str());
  }
  if (response.missing_ids_size() > 0) {
    std::printf("missing: %s\n", absl::StrJoin(response.missing_ids(), " ").c_str());
  }
  return absl::OkStatus();
}

absl::Status ListItemsCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(1, "a collection NAME"); !s.ok()) return s;
  auto page_size = IntOption(args, "page-size", 0);
  if (!page_size.ok()) return page_size.status();
  if (*page_size < 1 && args.Has("page-size")) {
    return cli.Usage(absl::StrFormat("--page-size %d is below 1", *page_size));
  }
  auto version = VersionOption(cli);
  if (!version.ok()) return version.status();
  if (args.Has("version") && !args.Has("with-sids")) {
    return cli.Usage("--version needs --with-sids");
  }
  v1::ListItemsRequest request;
  request.set_collection(args.positional[1]);
  request.set_page_size(static_cast<uint32_t>(std::min<int64_t>(*page_size, UINT32_MAX)));
  request.set_page_token(args.Get("page-token"));
  request.set_with_vectors(args.Has("with-vectors"));
  request.set_with_sids(args.Has("with-sids"));
  request.set_with_attributes(args.Has("with-attributes"));
  request.set_tokenizer_version(*version);
  while (true) {
    v1::ListItemsResponse page;
    if (auto s = cli.Call(&v1::Quantd::Stub::ListItems, request, &page); !s.ok()) return s;
    if (cli.json()) {
      PrintJson(page);
    } else {
      const int d = static_cast<int>(page.dimension());
      for (int i = 0; i < page.ids_size(); ++i) {
        std::string line = absl::StrCat(page.ids(i));
        if (request.with_vectors()) {
          std::vector<std::string> shown;
          for (int j = 0; j < std::min(d, 8); ++j) {
            shown.push_back(absl::StrFormat("%.6g", page.vectors(i * d + j)));
          }
          absl::StrAppend(&line, "\t[", absl::StrJoin(shown, ", "), d > 8 ? ", ...]" : "]");
        }
        if (request.with_sids()) absl::StrAppend(&line, "\t", page.sids(i).tokens());
        if (request.with_attributes()) {
          absl::StrAppend(&line, "\t", FormatAttributes(page.attributes(i)));
        }
        std::printf("%s\n", line.c_str());
      }
    }
    if (page.next_page_token().empty()) break;
    if (!args.Has("all")) {
      if (!cli.json()) std::printf("next page: --page-token %s\n", page.next_page_token().c_str());
      break;
    }
    request.set_page_token(page.next_page_token());
  }
  return absl::OkStatus();
}

absl::Status DeleteCommand(Cli& cli) {
  auto request = ItemsRequest<v1::DeleteItemsRequest>(cli);
  if (!request.ok()) return request.status();
  v1::DeleteItemsResponse response;
  if (auto s = cli.Call(&v1::Quantd::Stub::DeleteItems, *request, &response); !s.ok()) return s;
  if (cli.json()) {
    PrintJson(response);
  } else {
    std::printf("deleted %llu items (%llu did not exist); collection now has %llu items\n",
                static_cast<unsigned long long>(response.deleted()),
                static_cast<unsigned long long>(response.missing()),
                static_cast<unsigned long long>(response.item_count()));
  }
  return absl::OkStatus();
}

absl::Status InspectCommand(Cli& cli) {
  const Args& args = cli.args();
  if (auto s = cli.NeedPositional(1, "a FILE"); !s.ok()) return s;
  auto reader = VectorReader::Open(args.positional[1]);
  if (!reader.ok()) return reader.status();
  static constexpr const char* kTypes[] = {"uint8", "int8",   "uint16", "int16",   "uint32",
                                           "int32", "uint64", "int64",  "float32", "float64"};
  const char* type = kTypes[static_cast<int>((*reader)->element_type())];
  const std::string format(VectorFileFormatName((*reader)->format()));
  if (cli.json()) {
    JsonObject()
        .Set("path", args.positional[1])
        .Set("format", format)
        .Set("element_type", type)
        .Set("rows", static_cast<double>((*reader)->rows()))
        .Set("dimension", static_cast<double>((*reader)->dim()))
        .Print();
  } else {
    std::printf("%s: %s, %s, %lld rows x %lld dimensions\n", args.positional[1].c_str(),
                format.c_str(), type, static_cast<long long>((*reader)->rows()),
                static_cast<long long>((*reader)->dim()));
  }
  return absl::OkStatus();
}

}  // namespace quantd::quantctl
