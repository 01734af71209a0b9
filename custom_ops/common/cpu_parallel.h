// CPU threading shared by the package's custom ops (psa_mask, psa_attention):
// a persistent helper pool and ParallelFor over disjoint tasks, plus a
// per-thread scratch buffer. Header-only, standard C++ only.
//
// Threads: PADDLESEG_EXT_OP_THREADS (PSA_MASK_NUM_THREADS, its older name), else
// OMP_NUM_THREADS, else the hardware's.
#ifndef PADDLESEG_EXT_CPU_PARALLEL_H_
#define PADDLESEG_EXT_CPU_PARALLEL_H_

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

namespace paddleseg_ext_cpu {

// Below this many touched elements waking helper threads costs more than
// it saves.
constexpr int64_t kMinParallelWork = int64_t{1} << 16;

inline int PositiveEnv(const char* name) {
  const char* env = std::getenv(name);
  return env != nullptr ? std::max(std::atoi(env), 0) : 0;
}

// Threads for `work` elements: PADDLESEG_EXT_OP_THREADS (the execution policy
// sets it for a tool's run), PSA_MASK_NUM_THREADS (its older name), else
// OMP_NUM_THREADS (the usual knob on shared machines), else the hardware's.
inline int NumThreads(int64_t work) {
  if (work < kMinParallelWork) return 1;
  int threads = PositiveEnv("PADDLESEG_EXT_OP_THREADS");
  if (threads == 0) threads = PositiveEnv("PSA_MASK_NUM_THREADS");
  if (threads == 0) threads = PositiveEnv("OMP_NUM_THREADS");
  if (threads == 0) {
    threads = static_cast<int>(std::thread::hardware_concurrency());
  }
  return std::min(std::max(threads, 1), 64);
}

// Persistent helper threads that sleep on a condition variable. The calling
// thread always works too and never waits for a helper that has not started
// on the current job, so a helper that the OS does not schedule soon costs
// nothing. (With OpenMP, whose regions end in a barrier over all threads, the
// op ran 2-30x slower whenever another process held the second core of a
// 2-core machine: every call waited for the descheduled thread.)
class TaskPool {
 public:
  using TaskFn = void (*)(const void* ctx, int64_t task);

  // One pool per process; a forked child gets a fresh one (the parent's
  // threads do not exist there).
  static TaskPool& Get() {
    static std::mutex mu;
    static TaskPool* pool = nullptr;
    static pid_t owner = 0;
    std::lock_guard<std::mutex> lock(mu);
    if (pool == nullptr || owner != getpid()) {
      pool = new TaskPool();  // never deleted: helpers may sleep in it at exit
      owner = getpid();
    }
    return *pool;
  }

  // Runs fn(ctx, t) for every t in [0, tasks), on this thread plus up to
  // `helpers` pool threads. Concurrent callers run serially on their own
  // thread rather than queue behind each other.
  void Run(int64_t tasks, int helpers, TaskFn fn, const void* ctx) {
    std::unique_lock<std::mutex> busy(run_mu_, std::try_to_lock);
    if (!busy.owns_lock() || helpers <= 0) {
      for (int64_t t = 0; t < tasks; ++t) fn(ctx, t);
      return;
    }
    Job job;
    job.fn = fn;
    job.ctx = ctx;
    job.tasks = tasks;
    job.helpers = helpers;
    {
      std::lock_guard<std::mutex> lock(mu_);
      while (static_cast<int>(workers_.size()) < helpers) {
        const int index = static_cast<int>(workers_.size());
        workers_.emplace_back([this, index] { WorkerLoop(index); });
        workers_.back().detach();
      }
      job_ = &job;
      ++generation_;
    }
    wake_.notify_all();
    Drain(&job);
    std::unique_lock<std::mutex> lock(mu_);
    job_ = nullptr;  // helpers that wake from now on do not join
    done_.wait(lock, [this] { return active_ == 0; });
  }

 private:
  struct Job {
    TaskFn fn;
    const void* ctx;
    int64_t tasks;
    int helpers;
    std::atomic<int64_t> next{0};
  };

  static void Drain(Job* job) {
    for (int64_t t = job->next.fetch_add(1); t < job->tasks;
         t = job->next.fetch_add(1)) {
      job->fn(job->ctx, t);
    }
  }

  void WorkerLoop(int index) {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      Job* job = job_;
      if (job == nullptr || index >= job->helpers) continue;
      ++active_;
      lock.unlock();
      Drain(job);
      lock.lock();
      if (--active_ == 0) done_.notify_all();
    }
  }

  std::mutex run_mu_;  // one job at a time
  std::mutex mu_;      // guards the fields below
  std::condition_variable wake_;
  std::condition_variable done_;
  std::vector<std::thread> workers_;
  Job* job_ = nullptr;
  uint64_t generation_ = 0;
  int active_ = 0;
};

// body(t) for t in [0, tasks), in parallel when `work` (elements) pays for it.
// Every task must write a disjoint part of the output.
template <typename Body>
void ParallelFor(int64_t tasks, int64_t work, const Body& body) {
  const int threads = NumThreads(work);
  if (threads <= 1 || tasks <= 1) {
    for (int64_t t = 0; t < tasks; ++t) body(t);
    return;
  }
  TaskPool::Get().Run(
      tasks, threads - 1,
      [](const void* ctx, int64_t t) { (*static_cast<const Body*>(ctx))(t); },
      &body);
}

// Per-thread staging buffer, reused across tasks and calls.
template <typename T>
T* Scratch(int64_t numel) {
  thread_local std::vector<T> buffer;
  if (static_cast<int64_t>(buffer.size()) < numel) buffer.resize(numel);
  return buffer.data();
}

}  // namespace paddleseg_ext_cpu

#endif  // PADDLESEG_EXT_CPU_PARALLEL_H_
