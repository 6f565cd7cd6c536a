// OpenVINO backend: the engine dir's ONNX (or IR) read once, a static-shape copy compiled per input shapes.
#include <algorithm>
#include <istream>
#include <openvino/frontend/manager.hpp>
#include <openvino/openvino.hpp>
#include <sstream>
#include <streambuf>

#include "engine.hpp"
#include "errors.hpp"

namespace acsdk {

namespace {

// OpenVINO's messages span lines (source locations, a traceback); the CLI prints one line per error.
std::string one_line(const std::string& text) {
  std::string out;
  for (size_t start = 0; start < text.size();) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.find_first_not_of(" \t") == std::string::npos || line.rfind("Exception from", 0) == 0) continue;
    out += (out.empty() ? "" : " ") + line.substr(line.find_first_not_of(" \t"));
    if (out.size() > 300) break;
  }
  return out.empty() ? text : out;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

// An istream over bytes in memory (a mapping), read in place: std::istringstream would copy them first.
class ViewBuffer : public std::streambuf {
 public:
  ViewBuffer(const char* data, size_t size) {
    char* p = const_cast<char*>(data);  // read only: a streambuf's get area is char*, nothing here writes it
    setg(p, p, p + size);
  }

 protected:
  pos_type seekoff(off_type off, std::ios_base::seekdir dir, std::ios_base::openmode which) override {
    if (!(which & std::ios_base::in)) return pos_type(off_type(-1));
    const off_type base = dir == std::ios_base::beg ? 0 : dir == std::ios_base::cur ? gptr() - eback() : egptr() - eback();
    const off_type to = base + off;
    if (to < 0 || to > egptr() - eback()) return pos_type(off_type(-1));
    setg(eback(), eback() + to, egptr());
    return pos_type(to);
  }
  pos_type seekpos(pos_type pos, std::ios_base::openmode which) override {
    return seekoff(off_type(pos), std::ios_base::beg, which);
  }
};

// An ONNX graph read from its checked bytes in place (Core::read_model(std::string) would copy them twice, into
// the string and an istringstream): the frontend OpenVINO's read_model uses, given a stream over the mapping, and
// the graph's path for the directory of its external data (mmap'd by the frontend; their locations and files were
// checked by EngineDir::artifact).
std::shared_ptr<ov::Model> read_onnx(const Artifact& artifact) {
  ov::frontend::FrontEndManager manager;
  const ov::frontend::FrontEnd::Ptr frontend = manager.load_by_framework("onnx");
  ViewBuffer buffer(artifact.bytes->data(), artifact.bytes->size());
  std::istream stream(&buffer);
  ov::AnyVector params{static_cast<std::istream*>(&stream)};
  if (artifact.external_data) params.emplace_back(artifact.path);
  params.emplace_back(true);  // external data memory-mapped, as read_model does by default
  const ov::frontend::InputModel::Ptr input = frontend ? frontend->load(params) : nullptr;
  if (!input) OPENVINO_THROW("the ONNX frontend cannot read ", artifact.path);
  return frontend->convert(input);
}

class OpenVINOEngine : public Engine {
 public:
  OpenVINOEngine(const std::string& name, const Artifact& artifact, const BackendOptions& options)
      : name_(name), device_(options.device), precision_(artifact.precision), low_memory_(options.low_memory) {
    outputs_ = output_names(name, artifact);
    const auto devices = core_.get_available_devices();
    const std::string family = device_.substr(0, device_.find('.'));
    const bool found = std::any_of(devices.begin(), devices.end(),
                                   [&](const std::string& d) { return d.substr(0, d.find('.')) == family; });
    if (!found) throw InputError("device", "an OpenVINO device of this machine (" + join(devices) + ")", "'" + device_ + "'");
    if (!options.cache_dir.empty()) core_.set_property(ov::cache_dir(options.cache_dir));
    // From the bytes whose sha256 was checked, mapped (FileBytes). An IR's weights are shared, not copied, by the
    // model's constants (and by compiled models where the plugin uses them as they are): the mapping is kept for
    // the engine's life (weights_), file-backed pages, not this process's own memory. An ONNX's graph is parsed
    // from the mapping in place; only its external data is opened by path, checked unchanged once read.
    if (!artifact.bytes) throw EngineDirError(name + ": the artifact holds no bytes (EngineDir::artifact reads them)");
    if (artifact.format == "onnx") {
      model_ = read_onnx(artifact);
      check_data_files(name, artifact);
    } else {
      weights_ = artifact.weights;
      const ov::Tensor weights = weights_ ? ov::Tensor(ov::element::u8, ov::Shape{weights_->size()},
                                                       const_cast<char*>(weights_->data()))
                                          : ov::Tensor();
      model_ = core_.read_model(std::string(artifact.bytes->view()), weights);  // the XML: small
    }
    config_ = {ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY), ov::num_streams(1)};
    if (family == "CPU") {
      // fp32 and int8 run at f32 (the CPU plugin would otherwise pick bf16 where the CPU has it and change fp32
      // results); fp16 runs at bf16 where the CPU has it: the Python runtime's choice.
      const auto caps = core_.get_property("CPU", ov::device::capabilities);
      const bool bf16 = std::find(caps.begin(), caps.end(), "BF16") != caps.end();
      hint_ = precision_ == "fp16" && bf16 ? ov::element::bf16 : ov::element::f32;
      config_.emplace(ov::hint::inference_precision(hint_));
    }
  }

  std::map<std::string, Tensor> run(const Feeds& inputs) override {
    try {
      return infer(inputs);
    } catch (const ov::Exception& e) {  // compile or infer: one line naming the component, never raw text
      throw BackendError("engines", name_ + ": OpenVINO failed on " + device_ + ": " + one_line(e.what()));
    }
  }

  std::map<std::string, Tensor> infer(const Feeds& inputs) {
    std::vector<std::vector<int64_t>> key;
    for (const auto& port : model_->inputs()) key.push_back(feed(inputs, port).shape);
    auto it = compiled_.find(key);
    if (it == compiled_.end()) {
      if (low_memory_) compiled_.clear();  // each compiled shape holds its own copy of the weights: one at a time
      auto model = model_->clone();
      std::map<ov::Output<ov::Node>, ov::PartialShape> shapes;
      for (const auto& port : model->inputs()) {
        const auto& s = feed(inputs, port).shape;
        shapes[port] = ov::PartialShape(std::vector<ov::Dimension>(s.begin(), s.end()));
      }
      model->reshape(shapes);
      auto compiled = core_.compile_model(model, device_, config_);
      it = compiled_.emplace(key, compiled.create_infer_request()).first;
    }
    ov::InferRequest& request = it->second;
    std::vector<std::vector<ov::float16>> halves;  // fp16 inputs of an fp16 graph, converted here
    halves.reserve(model_->inputs().size());
    for (const auto& port : request.get_compiled_model().inputs()) {
      const Tensor& t = feed(inputs, port);  // checked by feed(): data of the shape's count
      const ov::Shape shape(t.shape.begin(), t.shape.end());
      if (port.get_element_type() == ov::element::f32) {
        request.set_tensor(port, ov::Tensor(ov::element::f32, shape, const_cast<float*>(t.ptr())));
      } else if (port.get_element_type() == ov::element::f16) {
        halves.emplace_back(t.data.begin(), t.data.end());
        request.set_tensor(port, ov::Tensor(ov::element::f16, shape, halves.back().data()));
      } else {
        throw BackendError("engines", name_ + ": input '" + port.get_any_name() + "' has element type " +
                           port.get_element_type().get_type_name() + "; f32 or f16 are fed");
      }
    }
    request.infer();
    std::map<std::string, Tensor> outs;
    for (const auto& port : request.get_compiled_model().outputs()) {
      const ov::Tensor o = request.get_tensor(port);
      Tensor t(std::vector<int64_t>(o.get_shape().begin(), o.get_shape().end()));
      if (o.get_element_type() == ov::element::f32) {
        std::copy_n(o.data<const float>(), t.numel(), t.ptr());
      } else if (o.get_element_type() == ov::element::f16) {
        std::copy_n(o.data<const ov::float16>(), t.numel(), t.ptr());
      } else {
        throw BackendError("engines", name_ + ": output '" + port.get_any_name() + "' has element type " +
                           o.get_element_type().get_type_name());
      }
      outs.emplace(output_name(port), std::move(t));
    }
    for (const auto& spec : outputs_)  // what the caller reads by the manifest's names: never a map::at
      if (!outs.count(spec)) {
        std::vector<std::string> produced;
        for (const auto& [n, t] : outs) produced.push_back(n);
        throw missing_output(name_, spec, produced);
      }
    return outs;
  }

  void release() override { compiled_.clear(); }

  std::string describe() const override {
    std::ostringstream out;
    out << "openvino " << device_ << " " << precision_;
    if (device_.rfind("CPU", 0) == 0) out << " (inference precision " << hint_.get_type_name() << ")";
    return out.str();
  }

 private:
  // A port has one or more tensor names (an fp16 graph may add a cast's); the manifest's name is among them.
  // What the caller fed for `port`, checked (Engine::run is public: a Tensor built by hand must hold its shape's
  // count of values before OpenVINO is handed its pointer and shape): InputError naming the input otherwise.
  template <typename Port>
  const Tensor& feed(const Feeds& inputs, const Port& port) const {
    for (const auto& name : port.get_names()) {
      auto it = inputs.find(name);
      if (it == inputs.end()) continue;
      const std::string argument = name_ + " input '" + name + "'";
      if (!it->second) throw InputError(argument, "a tensor", "a null pointer");
      it->second->check(argument);
      return *it->second;
    }
    throw BackendError("engines", name_ + ": the model's input '" + port.get_any_name() + "' was not fed");
  }

  template <typename Port>
  std::string output_name(const Port& port) const {
    for (const auto& spec : outputs_)
      if (port.get_names().count(spec)) return spec;
    return port.get_any_name();
  }

  std::string name_, device_, precision_;
  bool low_memory_ = false;
  std::vector<std::string> outputs_;  // the manifest's output names
  ov::Core core_;
  std::shared_ptr<const FileBytes> weights_;  // declared before model_: outlives the constants that share it
  std::shared_ptr<ov::Model> model_;
  ov::AnyMap config_;
  ov::element::Type hint_ = ov::element::f32;
  std::map<std::vector<std::vector<int64_t>>, ov::InferRequest> compiled_;
};

}  // namespace

std::unique_ptr<Engine> open_openvino(const std::string& name, const Artifact& artifact, const BackendOptions& options) {
  try {
    return std::make_unique<OpenVINOEngine>(name, artifact, options);
  } catch (const ov::Exception& e) {
    throw BackendError("engines", name + ": OpenVINO could not open " + artifact.path + ": " + one_line(e.what()));
  }
}

}  // namespace acsdk
