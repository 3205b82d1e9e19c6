mod common;
mod deliver;
mod gateway;
mod pipeline;
