// A test fixture running an in-process QuantdServer on a fresh embedded database, with a stub
// connected to it; Restart() reopens the same data directory.
#ifndef QUANTD_TESTS_SERVER_FIXTURE_H_
#define QUANTD_TESTS_SERVER_FIXTURE_H_

#include <chrono>
#include <memory>
#include <utility>

#include "client/client.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/test_support.h"

namespace quantd::testing {

class InProcessServerTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(); }

  void Start() {
    auto server =
        QuantdServer::Start(ServerOptions::Embedded(dir_.path() + "/data", /*sync=*/false));
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
    stub_ = v1::Quantd::NewStub(Connect(server_->address()));
  }

  void Restart() {
    stub_.reset();
    server_->Shutdown(std::chrono::seconds(5));
    server_.reset();
    Start();
  }

  TempDir dir_;
  std::unique_ptr<QuantdServer> server_;
  std::unique_ptr<v1::Quantd::Stub> stub_;
};

}  // namespace quantd::testing

#endif  // QUANTD_TESTS_SERVER_FIXTURE_H_
