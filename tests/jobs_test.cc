// JobManager over a real Storage: a job that a crash left RUNNING reads after restart exactly as
// one a clean shutdown stopped: FAILED, phase "interrupted", the error naming the phase and
// progress it had reached; the job kinds are one table.
#include "server/jobs.h"

#include <memory>
#include <string>
#include <thread>

#include "gtest/gtest.h"
#include "server/index_job.h"
#include "server/storage.h"
#include "server/tokenizer_job.h"
#include "tests/test_support.h"

namespace quantd {
namespace {

using ::quantd::testing::TempDir;

class JobsTest : public ::testing::Test {
 protected:
  void SetUp() override { Open(); }
  void Open() {
    auto opened = Storage::Open({.path = dir_.path() + "/db", .sync = true});
    ASSERT_TRUE(opened.ok()) << opened.status();
    storage_ = std::move(*opened);
  }

  TempDir dir_;
  std::unique_ptr<Storage> storage_;
};

TEST_F(JobsTest, JobKindsAreTheThreeKinds) {
  ASSERT_EQ(JobKinds().size(), 3u);
  EXPECT_EQ(JobKinds()[0]->kind, "train_tokenizer");
  EXPECT_EQ(JobKinds()[1]->kind, "import_tokenizer");
  EXPECT_EQ(JobKinds()[2]->kind, "train_index");
}

TEST_F(JobsTest, ARunningRecordLeftByACrashReadsInterruptedWithItsPhase) {
  auto info = storage_->collections().Create("c", 4, Metric::kL2);
  ASSERT_TRUE(info.ok()) << info.status();
  for (const auto& [kind, model] :
       {std::pair<std::string, std::string>{"train_tokenizer", "tokenizer"},
        {"train_index", "index"}}) {
    storage::JobRecord record;
    record.set_id(kind == "train_index" ? "job-000008" : "job-000007");
    record.set_collection("c");
    record.set_collection_id(info->id);
    record.set_kind(kind);
    record.set_state(v1::JOB_STATE_RUNNING);
    record.set_phase("training level 2/3");
    record.set_progress(0.4);
    record.set_start_time_ms(1);
    ASSERT_TRUE(storage_->jobs().Put(record).ok());
  }
  for (int reopen = 0; reopen < 2; ++reopen) {  // and the verdict is what was written
    auto jobs = JobManager::Create(storage_.get());
    ASSERT_TRUE(jobs.ok()) << jobs.status();
    for (const auto& [id, model] : {std::pair<std::string, std::string>{"job-000007", "tokenizer"},
                                    {"job-000008", "index"}}) {
      auto job = (*jobs)->Get(id);
      ASSERT_TRUE(job.ok()) << job.status();
      EXPECT_EQ(job->state(), v1::JOB_STATE_FAILED);
      EXPECT_EQ(job->phase(), "interrupted");
      EXPECT_EQ(job->progress(), 0.4);
      EXPECT_EQ(job->error(),
                "interrupted in phase 'training level 2/3' at 40%: the server stopped before the "
                "job finished; the previous " +
                    model + " version is unchanged");
    }
    jobs->reset();
    storage_.reset();
    Open();
  }
}

TEST_F(JobsTest, ACleanStopRecordsTheSameAsACrash) {
  auto info = storage_->collections().Create("c", 4, Metric::kL2);
  ASSERT_TRUE(info.ok()) << info.status();
  const std::vector<uint64_t> ids = testing::FirstIds(5000);
  const std::vector<float> vectors = testing::PatternRows(5000, 4);
  ASSERT_TRUE(storage_->items().Upsert("c", ids, vectors).ok());
  auto jobs = JobManager::Create(storage_.get());
  ASSERT_TRUE(jobs.ok()) << jobs.status();
  v1::TrainTokenizerRequest request;
  request.set_collection("c");
  request.add_codebook_sizes(256);
  request.add_codebook_sizes(256);
  request.set_balanced(true);
  request.set_max_iterations(1000);
  auto started = (*jobs)->Start(std::make_unique<TokenizerJob>(request));
  ASSERT_TRUE(started.ok()) << started.status();
  v1::Job job;
  for (int i = 0; i < 3000; ++i) {
    job = *(*jobs)->Get(started->id());
    if (job.phase().rfind("training", 0) == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_EQ(job.state(), v1::JOB_STATE_RUNNING) << job.phase();
  (*jobs)->Stop();
  jobs->reset();  // joins the worker: the job has recorded how it ended
  auto reopened = JobManager::Create(storage_.get());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  const v1::Job stopped = *(*reopened)->Get(started->id());
  EXPECT_EQ(stopped.state(), v1::JOB_STATE_FAILED);
  EXPECT_EQ(stopped.phase(), "interrupted");
  EXPECT_TRUE(stopped.error().rfind("interrupted in phase 'training level ", 0) == 0)
      << stopped.error();
  EXPECT_NE(stopped.error().find("the previous tokenizer version is unchanged"), std::string::npos)
      << stopped.error();
}

}  // namespace
}  // namespace quantd
