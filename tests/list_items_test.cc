// ListItems through gRPC, in-process: pages in id order with vectors and SIDs, page tokens that
// survive concurrent writes and are refused when altered or used on another collection.
#include <algorithm>
#include <map>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/server_fixture.h"

namespace quantd {
namespace {

constexpr int kDim = 4;

class ListItemsTest : public ::quantd::testing::InProcessServerTest {
 protected:
  static std::vector<float> Vectors(const std::vector<uint64_t>& ids) {
    std::vector<float> out;
    for (uint64_t id : ids) {
      for (int j = 0; j < kDim; ++j) out.push_back(static_cast<float>(id % 97) * 0.5f + j);
    }
    return out;
  }
  void Put(const std::string& name, const std::vector<uint64_t>& ids) {
    ASSERT_TRUE(Upsert(name, ids, Vectors(ids)).ok());
  }
  grpc::Status List(const v1::ListItemsRequest& request, v1::ListItemsResponse* out) {
    grpc::ClientContext context;
    return stub_->ListItems(&context, request, out);
  }
  // Every id of the collection, page by page (page_size ids at a time), checking each page.
  std::vector<uint64_t> ListAll(const std::string& name, uint32_t page_size, int* pages) {
    std::vector<uint64_t> ids;
    v1::ListItemsRequest request;
    request.set_collection(name);
    request.set_page_size(page_size);
    *pages = 0;
    while (true) {
      v1::ListItemsResponse page;
      const grpc::Status status = List(request, &page);
      EXPECT_TRUE(status.ok()) << status.error_message();
      if (!status.ok()) break;
      ++*pages;
      EXPECT_LE(page.ids_size(), static_cast<int>(page_size));
      ids.insert(ids.end(), page.ids().begin(), page.ids().end());
      if (page.next_page_token().empty()) break;
      request.set_page_token(page.next_page_token());
    }
    return ids;
  }
};

TEST_F(ListItemsTest, PagesInIdOrderWithVectorsAndSids) {
  CreateCollection("c", kDim);
  std::vector<uint64_t> ids(2500);
  std::iota(ids.begin(), ids.end(), 1000);
  ids.push_back(UINT64_MAX);  // the largest id ends the last page
  Put("c", ids);
  int pages = 0;
  EXPECT_EQ(ListAll("c", 1000, &pages), ids);
  EXPECT_EQ(pages, 3);

  v1::TrainTokenizerRequest train;
  train.set_collection("c");
  train.add_codebook_sizes(8);
  train.add_codebook_sizes(8);
  ASSERT_EQ(TrainAndWait(train).state(), v1::JOB_STATE_SUCCEEDED);
  const std::map<uint64_t, std::string> sids = AllSids("c");
  v1::ListItemsRequest request;
  request.set_collection("c");
  request.set_page_size(700);
  request.set_with_vectors(true);
  request.set_with_sids(true);
  v1::ListItemsResponse page;
  ASSERT_TRUE(List(request, &page).ok());
  ASSERT_EQ(page.ids_size(), 700);
  EXPECT_EQ(page.dimension(), static_cast<uint32_t>(kDim));
  const std::vector<uint64_t> first(page.ids().begin(), page.ids().end());
  const std::vector<float> expected = Vectors(first);
  EXPECT_TRUE(
      std::equal(page.vectors().begin(), page.vectors().end(), expected.begin(), expected.end()));
  ASSERT_EQ(page.sids_size(), 700);
  for (int i = 0; i < page.ids_size(); ++i) {
    std::string key;
    for (uint32_t code : page.sids(i).codes()) key += std::to_string(code) + ",";
    EXPECT_EQ(key + "#" + std::to_string(page.sids(i).suffix()), sids.at(page.ids(i)));
  }
  // An empty collection: one empty page.
  CreateCollection("empty", kDim);
  EXPECT_TRUE(ListAll("empty", 10, &pages).empty());
  EXPECT_EQ(pages, 1);
}

TEST_F(ListItemsTest, TokensSurviveWritesBetweenPages) {
  CreateCollection("c", kDim);
  std::vector<uint64_t> ids(300);
  std::iota(ids.begin(), ids.end(), 0);
  Put("c", ids);
  v1::ListItemsRequest request;
  request.set_collection("c");
  request.set_page_size(100);
  v1::ListItemsResponse first;
  ASSERT_TRUE(List(request, &first).ok());
  ASSERT_EQ(first.ids(99), 99u);
  // Meanwhile: items before and after the position come and go.
  Put("c", {50, 150, 1000});
  {
    grpc::ClientContext context;
    v1::DeleteItemsRequest remove;
    remove.set_collection("c");
    remove.add_ids(10);
    remove.add_ids(100);
    remove.add_ids(101);
    v1::DeleteItemsResponse removed;
    ASSERT_TRUE(stub_->DeleteItems(&context, remove, &removed).ok());
  }
  std::vector<uint64_t> rest;
  request.set_page_token(first.next_page_token());
  while (true) {
    v1::ListItemsResponse page;
    ASSERT_TRUE(List(request, &page).ok());
    rest.insert(rest.end(), page.ids().begin(), page.ids().end());
    if (page.next_page_token().empty()) break;
    request.set_page_token(page.next_page_token());
  }
  // Everything after 99 as it is now, each once: 100 and 101 gone, 1000 new.
  std::vector<uint64_t> expected(198);
  std::iota(expected.begin(), expected.end(), 102);
  expected.push_back(1000);
  EXPECT_EQ(rest, expected);
}

TEST_F(ListItemsTest, BadRequestsAreRefused) {
  CreateCollection("c", kDim);
  CreateCollection("d", kDim);
  std::vector<uint64_t> ids(20);
  std::iota(ids.begin(), ids.end(), 0);
  Put("c", ids);
  Put("d", ids);
  v1::ListItemsRequest request;
  request.set_collection("c");
  request.set_page_size(5);
  v1::ListItemsResponse page;
  ASSERT_TRUE(List(request, &page).ok());
  const std::string token = page.next_page_token();
  ASSERT_FALSE(token.empty());

  const auto code = [&](const v1::ListItemsRequest& bad, std::string* message = nullptr) {
    v1::ListItemsResponse ignored;
    const grpc::Status status = List(bad, &ignored);
    if (message != nullptr) *message = status.error_message();
    return status.error_code();
  };
  std::string message;
  v1::ListItemsRequest bad = request;
  bad.set_page_size(10001);
  EXPECT_EQ(code(bad, &message), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(message.find("page_size 10001"), std::string::npos) << message;
  // Every single-character change of the token is refused, never read as another position.
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (size_t i = 0; i < token.size(); ++i) {
    bad = request;
    std::string altered = token;
    altered[i] = alphabet[(alphabet.find(token[i]) + 1) % alphabet.size()];
    bad.set_page_token(altered);
    EXPECT_EQ(code(bad), grpc::StatusCode::INVALID_ARGUMENT) << altered;
  }
  bad = request;
  bad.set_page_token(token.substr(0, token.size() - 2));
  EXPECT_EQ(code(bad), grpc::StatusCode::INVALID_ARGUMENT);
  // Another collection's token, and the token of a dropped and re-created collection.
  bad = request;
  bad.set_collection("d");
  bad.set_page_token(token);
  EXPECT_EQ(code(bad, &message), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(message.find("another collection"), std::string::npos) << message;
  {
    grpc::ClientContext context;
    v1::DropCollectionRequest drop;
    drop.set_name("c");
    v1::DropCollectionResponse dropped;
    ASSERT_TRUE(stub_->DropCollection(&context, drop, &dropped).ok());
  }
  CreateCollection("c", kDim);
  Put("c", ids);
  bad = request;
  bad.set_page_token(token);
  EXPECT_EQ(code(bad), grpc::StatusCode::INVALID_ARGUMENT);
  // SIDs without a tokenizer; a version without SIDs; an unknown collection.
  bad = request;
  bad.set_with_sids(true);
  EXPECT_EQ(code(bad), grpc::StatusCode::FAILED_PRECONDITION);
  bad = request;
  bad.set_tokenizer_version(2);
  EXPECT_EQ(code(bad), grpc::StatusCode::INVALID_ARGUMENT);
  bad = request;
  bad.set_collection("nope");
  EXPECT_EQ(code(bad), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace quantd
