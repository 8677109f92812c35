//! The page's one WebGPU device, created on first use.

use std::cell::RefCell;

use burn::backend::wgpu::graphics::WebGpu as WebGpuApi;
use burn::backend::wgpu::{init_setup_async, RuntimeOptions, WgpuDevice};
use js_sys::{Function, Promise, Reflect};
use serde_json::{json, Value};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

thread_local! {
    static DEVICE: RefCell<Option<(WgpuDevice, Value)>> = const { RefCell::new(None) };
}

fn get(target: &JsValue, key: &str) -> JsValue {
    Reflect::get(target, &JsValue::from_str(key)).unwrap_or(JsValue::UNDEFINED)
}

fn text(target: &JsValue, key: &str) -> Value {
    get(target, key)
        .as_string()
        .map(Value::String)
        .unwrap_or(Value::Null)
}

/// Ask `navigator.gpu` for an adapter first: Burn's setup panics (and, inside an async wasm
/// call, never settles the promise) when there is none.
async fn probe_adapter() -> Result<Value, String> {
    let navigator = get(&js_sys::global(), "navigator");
    let gpu = get(&navigator, "gpu");
    if gpu.is_undefined() || gpu.is_null() {
        return Err("WebGPU is not available here (navigator.gpu is missing)".into());
    }
    let request: Function = get(&gpu, "requestAdapter")
        .dyn_into()
        .map_err(|_| "navigator.gpu.requestAdapter is not a function".to_string())?;
    let promise: Promise = request
        .call0(&gpu)
        .map_err(|e| format!("requestAdapter failed: {e:?}"))?
        .dyn_into()
        .map_err(|_| "requestAdapter did not return a promise".to_string())?;
    let adapter = JsFuture::from(promise)
        .await
        .map_err(|e| format!("requestAdapter failed: {e:?}"))?;
    if adapter.is_null() || adapter.is_undefined() {
        return Err(
            "WebGPU is present but offers no adapter (requestAdapter() returned null)".into(),
        );
    }
    let info = get(&adapter, "info");
    Ok(json!({
        "api": "WebGPU",
        "vendor": text(&info, "vendor"),
        "architecture": text(&info, "architecture"),
        "description": text(&info, "description"),
        "isFallbackAdapter": get(&adapter, "isFallbackAdapter").as_bool(),
    }))
}

/// The page's WebGPU device if one was initialised.
pub fn existing_device() -> Option<WgpuDevice> {
    DEVICE.with(|d| d.borrow().as_ref().map(|(device, _)| device.clone()))
}

/// The WebGPU device and a description of its adapter, initialised once per page/worker.
pub async fn device() -> Result<(WgpuDevice, Value), String> {
    if let Some(d) = DEVICE.with(|d| d.borrow().clone()) {
        return Ok(d);
    }
    let adapter = probe_adapter().await?;
    let device = WgpuDevice::default();
    let setup = init_setup_async::<WebGpuApi>(&device, RuntimeOptions::default()).await;
    let limits = setup.device.limits();
    let mut adapter = adapter;
    adapter["maxStorageBufferBindingSize"] = json!(limits.max_storage_buffer_binding_size);
    adapter["maxBufferSize"] = json!(limits.max_buffer_size);
    let d = (device, adapter);
    DEVICE.with(|slot| *slot.borrow_mut() = Some(d.clone()));
    Ok(d)
}
