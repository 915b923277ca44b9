//! `rpg eval`.

use anyhow::{Result, bail};
use rpg_train::checkpoint::model_file;
use rpg_train::checkpoint::run_config_path;
use rpg_train::evaluate::{check_fits, test_config};
use rpg_train::evaluate::{evaluate, load_test_data_for};
use rpg_train::output::{
    check_destination, check_file_path, enclosing_run, refuse_overwrite, write_json,
};
use rpg_train::setup::load_any;

use crate::cli::EvalArgs;

/// Evaluates a model on the test split; prints the figures and writes them
/// as JSON.
pub fn run(args: &EvalArgs) -> Result<()> {
    if args.batch_size == 0 {
        bail!("--batch-size must be positive, got 0");
    }
    let path = model_file(&args.checkpoint)?;
    let own_run = enclosing_run(&path);
    // In a run: eval-best.json (or -last) in the run's directory, outside
    // checkpoints/ (which the run replaces); elsewhere beside the model.
    let out = args.out.clone().unwrap_or_else(|| match &own_run {
        Some(run) => {
            let which = path
                .parent()
                .and_then(|d| d.file_name())
                .map_or("model".into(), |n| n.to_string_lossy().into_owned());
            run.join(format!("eval-{which}.json"))
        }
        None => path.with_file_name("eval.json"),
    });
    let run_config = run_config_path(&path);
    let inputs: Vec<&std::path::Path> = [Some(path.as_path()), run_config.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    refuse_overwrite("out", &out, &inputs)?;
    check_destination("out", &out, own_run.as_deref(), false)?;
    check_file_path(&out)?;
    let cfg = test_config(&path, &args.data.to_test_data())?;
    let device = rpg_nn::parse_device(&args.device)?;
    let built = load_any(&path, &device)?;
    let test = load_test_data_for(&cfg, &built.config)?;
    check_fits(&path, &built, &test)?;
    let result = evaluate(&built, &test, args.batch_size, cfg.workers)?;
    println!(
        "{}: {} on {} ({} images): accuracy {:.4}, loss {:.4}{}",
        path.display(),
        built.config.name,
        cfg.data.dataset,
        result.samples,
        result.accuracy,
        result.loss,
        if test.num_classes > 10 {
            format!(", top-5 {:.4}", result.top5)
        } else {
            String::new()
        }
    );
    let json = serde_json::json!({
        "checkpoint": path,
        "model": built.config.name,
        "dataset": cfg.data.dataset.to_string(),
        "samples": result.samples,
        "test_accuracy": result.accuracy,
        "test_loss": result.loss,
        "test_top5": result.top5,
    });
    write_json(&out, &json)?;
    Ok(())
}
